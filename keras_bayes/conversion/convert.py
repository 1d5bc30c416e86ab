"""`kb.to_bayesian`: a Bayesian copy of a trained Keras model (MOPED)."""

import warnings

import keras
import numpy as np
from keras import ops, tree
from keras.src.models.functional import Functional

from keras_bayes import _validation
from keras_bayes.conversion import graph, selection, table
from keras_bayes.layers.members_in_batch import MembersFromBatch


def to_bayesian(
    model,
    estimator="flipout",
    moped_delta=0.1,
    prior="normal",
    kl_weight=1.0,
    posterior_value="sample",
    seed=None,
    layers=None,
    ensemble_size=None,
):
    """A copy of `model` whose convolution and dense layers are Bayesian.

    Keras `Dense`, `Conv1D/2D/3D`, `Conv1D/2D/3DTranspose`,
    `DepthwiseConv1D/2D` and `SeparableConv1D/2D` layers become the matching
    keras-bayes layer, wherever they are: in the model's graph, in nested
    Sequential and Functional models, or inside subclassed layers (residual
    blocks) that make them in their constructor. Every argument is carried
    over (strides, padding, groups, dilation, depth multiplier, output
    padding, data format, activation, use_bias); each kernel's posterior
    mean is the trained kernel and its scale `moped_delta * |w|` (MOPED,
    Krishnan et al. 2020); biases stay point estimates at their trained
    values. Every other layer and every `keras.ops` operation is copied,
    with its weights and its `trainable` flag. In mean mode the copy
    computes what `model` computes.

    Nothing is left deterministic without a word: layers holding weights
    that the conversion cannot reach (a subclass of a Keras convolution, a
    layer a subclassed layer makes in `build`, a kind keras-bayes does not
    have in this version) are named in one `UserWarning`, with their
    parameter counts; so are regularizers and constraints, which the
    Bayesian layers do not take.

    Args:
        model: a built Sequential or Functional Keras model.
        estimator: `"flipout"`, `"reparameterization"`, or `"rank1"`: a
            rank-1 ensemble of `ensemble_size` members (below).
        moped_delta: relative posterior scale, a positive number.
        prior: kernel prior of the new layers (a `kb.priors` object, its
            name, or None).
        kl_weight: `kl_weight` of the new layers, e.g. `1 / num_train`.
        posterior_value: `"sample"` or `"mean"`.
        seed: int seed; layer `i` gets `seed + i`. None for random seeds.
        layers: which layers to convert. None: every convertible layer. A
            list of layer names and/or layer classes: the layers with these
            names (a nested model's or block's name selects every
            convertible layer inside it) and the layers of these classes.
            A callable: called with each convertible layer of the original
            model, returns True to convert it.
        ensemble_size: with `estimator="rank1"` (and only then), the number
            of members `K`, a positive int. Conv, transposed conv and dense
            layers become `kb.layers.*Rank1` layers with
            `batch_shape=(K,)`: the shared kernel is the trained kernel,
            each member's bias the trained bias, the factors start at their
            posterior's initial values (centred on 1, spread 0.1);
            `moped_delta` and `prior` are not used (the factors take the
            rank-1 prior N(1, 0.1)). Depthwise and separable layers, which
            have no rank-1 class, stay deterministic and are named in the
            warning. The copy feeds every input to each member, carries the
            members in the batch axis (`K * N` examples: every other layer,
            batch normalization included, sees the members as examples;
            each rank-1 layer is wrapped in `kb.layers.MembersInBatch`) and
            returns `(N, K, ...)` outputs (`kb.layers.MembersFromBatch`);
            fit it with labels repeated per member, average the members
            with `kb.layers.MemberAverage`.

    Returns:
        A new, built Keras model: Sequential for a Sequential model,
        Functional otherwise (also for a subclass of Functional).

    Raises:
        ValueError: a bad argument, named as in `Received: arg=value`.

    Example:

    ```python
    bayesian = kb.to_bayesian(trained_cnn, moped_delta=0.1,
                              kl_weight=1 / len(x_train))
    bayesian.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    bayesian.fit(x_train, y_train, epochs=3)

    # Only the classification head:
    head_only = kb.to_bayesian(trained_cnn, layers=["predictions"])

    # A rank-1 ensemble of 4 members; outputs (N, 4, classes):
    ensemble = kb.to_bayesian(trained_cnn, estimator="rank1", ensemble_size=4)
    ensemble.fit(x_train, np.repeat(y_train[:, None], 4, axis=1), ...)
    ```
    """
    if (
        not isinstance(estimator, str)
        or estimator.lower() not in table.ESTIMATORS
    ):
        raise _validation.invalid(
            "estimator",
            f"Expected one of {sorted(table.ESTIMATORS)}.",
            estimator,
        )
    estimator = estimator.lower()
    delta = _moped_delta(moped_delta)
    kl_weight = _validation.kl_weight(kl_weight)
    posterior_value = _validation.posterior_value(posterior_value)
    seed = _validation.seed(seed)
    if not isinstance(model, (keras.Sequential, Functional)) or not model.built:
        raise _validation.invalid(
            "model", "Expected a built Sequential or Functional model.", model
        )
    candidates, selected = selection.select(model, layers)

    # Built in mean mode: on PyTorch, Keras runs a layer inside a subclassed
    # block on real (zero) tensors to infer shapes, and a Flipout layer in
    # sample mode doubles that; the requested mode is set once converted.
    arguments = {"kl_weight": kl_weight, "posterior_value": "mean"}
    members = _ensemble_size(ensemble_size, estimator, prior)
    if members is None:
        arguments["kernel_prior"] = prior
    else:
        arguments["batch_shape"] = (members,)

    converter = graph.Converter(selected, estimator, arguments, seed)
    new_model = keras.models.clone_model(model, clone_function=converter)
    converter.check_replacements()
    converter.copy_weights(delta)
    for _, layer, *_ in converter.converted:
        layer.posterior_value = posterior_value
    converter.copy_trainable_flags(model, new_model)
    _warn(converter, candidates)
    if members is not None:
        new_model = _members_model(new_model, members)
    return new_model


def _ensemble_size(value, estimator, prior):
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


def _members_model(network, members):
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


def _moped_delta(value):
    try:
        delta = float(value)
    except (TypeError, ValueError):
        delta = float("nan")
    if isinstance(value, bool) or not np.isfinite(delta) or delta <= 0:
        raise _validation.invalid(
            "moped_delta", "Expected a finite, strictly positive number.", value
        )
    return delta


def _warn(converter, candidates):
    dropped = [
        (layer, keys) for layer, _, _, keys, _ in converter.converted if keys
    ]
    if dropped:
        listed = "; ".join(f"'{layer.name}': {keys}" for layer, keys in dropped)
        warnings.warn(
            "to_bayesian dropped arguments that the Bayesian layers do not "
            "take (the KL term regularises the kernels instead): "
            f"{listed}.",
            stacklevel=3,
        )
    if converter.unconverted:
        total = sum(layer.count_params() for layer, _ in converter.unconverted)
        lines = "\n".join(
            f"  '{layer.name}' ({type(layer).__name__}, "
            f"{layer.count_params():,} parameters): {reason}"
            for layer, reason in converter.unconverted
        )
        count = len(converter.unconverted)
        warnings.warn(
            f"to_bayesian left {count} layer{'s' if count > 1 else ''} "
            f"holding {total:,} parameters deterministic, because it cannot "
            f"convert them:\n{lines}",
            stacklevel=3,
        )
    elif not candidates:
        warnings.warn(
            "to_bayesian: the model has no Conv or Dense layer to convert; "
            "the copy is deterministic.",
            stacklevel=3,
        )
