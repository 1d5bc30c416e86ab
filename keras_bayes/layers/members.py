"""Ensemble members (`batch_shape`): how inputs, kernels and outputs carry
them, and how members fold into one convolution.

A map with members holds kernels with the leading axes `batch_shape`. An
input without member axes is fed to every member; an input with them
(right after the batch axis) is fed member by member; outputs carry the
member axes right after the batch axis. Maps fold members into their
computation with the helpers here; estimators never see member axes.
"""

import math

from keras import ops

from keras_bayes import _validation
from keras_bayes.layers.shapes import dims


class Members:
    """The member axes of a map.

    Args:
        batch_shape: the members' shape (`()`: no members).
        member_ndim: rank of one member's input, batch axis included
            (None: any rank, allowed only without members).
        layer_name: named in error messages.
    """

    def __init__(self, batch_shape, member_ndim, layer_name):
        self.shape = _validation.batch_shape(batch_shape)
        self.count = math.prod(self.shape)
        self.member_ndim = member_ndim
        self.layer_name = layer_name

    def __bool__(self):
        return bool(self.shape)

    def has_axes(self, input_shape):
        """Whether inputs carry member axes; checks them against the map."""
        if not self.shape:
            return False
        input_shape = tuple(input_shape)
        k = len(self.shape)
        if len(input_shape) == self.member_ndim:
            return False
        if (
            len(input_shape) == self.member_ndim + k
            and tuple(input_shape[1 : 1 + k]) == self.shape
        ):
            return True
        raise ValueError(
            f"Input 0 of layer '{self.layer_name}' is incompatible with the "
            f"layer: with batch_shape={self.shape} it expects inputs "
            f"of rank {self.member_ndim} (fed to every member) or of rank "
            f"{self.member_ndim + k} with axes 1 to {k} equal to "
            f"{self.shape} (one input per member). Full shape "
            f"received: {input_shape}"
        )

    def member_view(self, input_shape):
        """One member's input shape, with the batch axis."""
        input_shape = tuple(input_shape)
        if self.has_axes(input_shape):
            return input_shape[:1] + input_shape[1 + len(self.shape) :]
        return input_shape

    def output_shape(self, member_output_shape):
        return member_output_shape[:1] + self.shape + member_output_shape[1:]

    def flat_kernel(self, kernel):
        """`(*batch_shape, *kernel)` -> `(count, *kernel)`."""
        k = len(self.shape)
        return ops.reshape(kernel, (self.count,) + tuple(kernel.shape[k:]))

    def flat_inputs(self, inputs):
        """`(N, *batch_shape, ...)` -> `(N, count, ...)`."""
        sizes = dims(inputs)
        return ops.reshape(
            inputs, [-1, self.count] + sizes[1 + len(self.shape) :]
        )

    def restore(self, outputs):
        """`(N, count, ...)` -> `(N, *batch_shape, ...)`."""
        return ops.reshape(outputs, [-1, *self.shape] + dims(outputs)[2:])

    def expand(self, inputs):
        """Inputs with (size-1, broadcasting) member axes if they lack them."""
        if not self.shape or self.has_axes(inputs.shape):
            return inputs
        for _ in self.shape:
            inputs = ops.expand_dims(inputs, 1)
        return inputs

    def fold(self, inputs):
        """`(N, *batch_shape, ...)` -> `(N * count, ...)`: members become
        examples."""
        sizes = dims(inputs)
        return ops.reshape(inputs, [-1] + sizes[1 + len(self.shape) :])

    def unfold(self, outputs):
        """The inverse of `fold` on outputs."""
        return ops.reshape(outputs, [-1, *self.shape] + dims(outputs)[1:])


def merge_channels(inputs, rank, channels_first):
    """`(N, B, *member input)` -> one input with member-major channels.

    Member `b`'s channel `c` becomes channel `b * C + c`, so that member `b`
    is group `b` of a grouped convolution.
    """
    sizes = dims(inputs)
    if channels_first:
        return ops.reshape(inputs, [-1, sizes[1] * sizes[2]] + sizes[3:])
    inputs = ops.transpose(
        inputs, (0, *range(2, rank + 2), 1, rank + 2)
    )  # (N, *S, B, C)
    channels = sizes[1] * sizes[rank + 2]
    return ops.reshape(inputs, [-1] + sizes[2 : rank + 2] + [channels])


def split_channels(outputs, rank, channels_first, groups, members, filters):
    """Outputs whose channels are `(groups, members, filters / groups)` ->
    `(N, members, *member output)`, each member's channels in order."""
    per_group = filters // groups
    sizes = dims(outputs)
    if channels_first:
        spatial = sizes[2:]
        outputs = ops.reshape(
            outputs, [-1, groups, members, per_group] + spatial
        )
        if groups > 1:
            outputs = ops.transpose(outputs, (0, 2, 1, 3, *range(4, rank + 4)))
        return ops.reshape(outputs, [-1, members, filters] + spatial)
    spatial = sizes[1 : rank + 1]
    outputs = ops.reshape(
        outputs, [-1] + spatial + [groups, members, per_group]
    )
    outputs = ops.transpose(
        outputs, (0, rank + 2, *range(1, rank + 2), rank + 3)
    )  # (N, B, *S, G, Fg)
    return ops.reshape(outputs, [-1, members] + spatial + [filters])
