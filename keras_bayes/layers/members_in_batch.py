"""`MembersInBatch`: a layer with members inside a network whose other
layers see the members as examples.

`kb.to_bayesian(model, estimator="rank1", ensemble_size=K)` makes a network
of plain layers (batch norm, pooling, flatten, `keras.ops` operations) and
rank-1 layers with `K` members. The plain layers know nothing of member
axes, so the converted network carries the members in the batch axis:
`K * N` examples, member-major (the first `N` are member 0's). Each rank-1
layer is wrapped in a `MembersInBatch`, which moves the members from the
batch axis to the layer's member axis and back.
"""

import keras
from keras import ops

from keras_bayes import _validation
from keras_bayes._export import register


@register
class MembersInBatch(keras.layers.Layer):
    """Calls a layer with members on an input whose batch holds them.

    The input `(K * N, ...)` is read as `K` blocks of `N` examples, block
    `b` for member `b`; the wrapped layer gets `(N, K, ...)` (one input
    per member) and its output `(N, K, ...)` goes back to `(K * N, ...)`.

    Args:
        layer: a layer with `batch_shape=(K,)`, e.g. `kb.layers.Conv2DRank1`.
        **kwargs: base layer arguments (`name`, ...).

    Input shape:
        `(K * N, ...)`: what `layer` takes for one member, `K * N` examples.

    Output shape:
        `(K * N, ...)`: what `layer` gives for one member.

    Example:

    >>> layer = kb.layers.MembersInBatch(
    ...     kb.layers.DenseRank1(3, batch_shape=(4,)))
    >>> layer(np.zeros((8, 5))).shape  # 4 members of 2 examples
    (8, 3)
    """

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        shape = tuple(getattr(layer, "batch_shape", ()) or ())
        if len(shape) != 1:
            raise _validation.invalid(
                "layer",
                "Expected a layer with one member axis (`batch_shape=(K,)`).",
                layer,
            )
        self.layer = layer
        self.members = shape[0]

    def build(self, input_shape):
        if not self.layer.built:  # a loaded layer is built from its config
            self.layer.build(self._member_shape(input_shape))

    def _member_shape(self, input_shape):
        return (None, self.members) + tuple(input_shape[1:])

    def call(self, inputs, training=None):
        shape = ops.shape(inputs)
        grouped = ops.reshape(inputs, (self.members, -1, *shape[1:]))
        outputs = self.layer(ops.moveaxis(grouped, 0, 1), training=training)
        outputs = ops.moveaxis(outputs, 1, 0)
        out_shape = ops.shape(outputs)
        return ops.reshape(outputs, (-1, *out_shape[2:]))

    def compute_output_shape(self, input_shape):
        shape = self.layer.compute_output_shape(self._member_shape(input_shape))
        batch = input_shape[0]
        return (batch,) + tuple(shape[2:])

    def get_config(self):
        return {
            **super().get_config(),
            "layer": keras.saving.serialize_keras_object(self.layer),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"))
        return cls(layer, **config)


@register
class MembersFromBatch(keras.layers.Layer):
    """Moves `K` members from the batch axis to an axis of their own.

    The output layer of a network made with
    `kb.to_bayesian(..., estimator="rank1", ensemble_size=K)`: its input
    `(K * N, ...)` holds member `b`'s outputs in rows `b * N` to
    `(b + 1) * N - 1`; the output is `(N, K, ...)`, the library's layout of
    members' outputs (average them with `kb.layers.MemberAverage`).

    Args:
        members: `K`, a positive int.
        **kwargs: base layer arguments.

    Input shape:
        `(K * N, ...)`.

    Output shape:
        `(N, K, ...)`.

    Example:

    >>> kb.layers.MembersFromBatch(4)(np.zeros((8, 10))).shape
    (2, 4, 10)
    """

    def __init__(self, members, **kwargs):
        super().__init__(**kwargs)
        self.members = _validation.positive_int(members, "members")

    def call(self, inputs):
        shape = ops.shape(inputs)
        grouped = ops.reshape(inputs, (self.members, -1, *shape[1:]))
        return ops.moveaxis(grouped, 0, 1)

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        if batch is not None:
            batch //= self.members
        return (batch, self.members) + tuple(input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "members": self.members}
