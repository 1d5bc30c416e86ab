"""`to_bayesian(estimator="rank1")`: the rank-1 ensemble's members.

The number of members checked, the converted network fed every input once
per member in its batch axis (`members_model`), and each rank-1 layer's
weights set from the trained layer (`set_rank1`).
"""

import keras
import numpy as np
from keras import ops, tree

from keras_bayes import _validation
from keras_bayes.conversion import graph
from keras_bayes.layers.members_in_batch import MembersFromBatch


def ensemble_size(value, estimator, prior):
    """`ensemble_size` for `estimator="rank1"`, else None."""
    if estimator != "rank1":
        if value is not None:
            raise _validation.invalid(
                "ensemble_size",
                'Expected None: only estimator="rank1" has members.',
                value,
            )
        return None
    if value is None:
        raise _validation.invalid(
            "ensemble_size",
            'estimator="rank1" needs the number of members, a positive int.',
            value,
        )
    if not (isinstance(prior, str) and prior == "normal"):
        raise _validation.invalid(
            "prior",
            'Expected the default: with estimator="rank1" the kernels stay '
            "point estimates and the factors take the rank-1 layers' prior, "
            "N(1, 0.1).",
            prior,
        )
    return _validation.positive_int(value, "ensemble_size")


def members_model(network, members):
    """`network` fed `members` copies of each input in its batch axis, its
    outputs `(N, members, ...)`."""
    inputs = [
        keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype)
        for tensor in network.inputs
    ]
    tiled = [
        ops.tile(x, (members,) + (1,) * (len(x.shape) - 1)) for x in inputs
    ]
    outputs = network(tiled if len(tiled) > 1 else tiled[0])
    outputs = tree.map_structure(
        lambda output: MembersFromBatch(members)(output), outputs
    )
    return keras.Model(
        inputs if len(inputs) > 1 else inputs[0], outputs, name=network.name
    )


def set_rank1(original, new):
    """The shared kernel is the trained one, each member's bias the trained
    bias (plain weights, no posterior); the factors keep the values their
    family gave them, centred on 1."""
    new.kernel.assign(graph.numpy(original.kernel))
    if original.use_bias:
        bias = graph.numpy(original.bias)
        new.bias.assign(np.broadcast_to(bias, tuple(new.bias.shape)))
