"""`LinearMap`: what every map shares (members, bias, channel factors)."""

import keras
from keras import ops

from keras_bayes.layers.members import Members


def map_property(name):
    """A read-only layer attribute read from the layer's map, `self._map`."""
    return property(
        lambda self: getattr(self._map, name),
        doc=f"The layer's `{name}` argument, as validated.",
    )


class LinearMap:
    """A linear map `f(inputs, kernel)` of one layer.

    Subclasses set `member_ndim` (rank of one member's input, batch axis
    included; None: any rank without members) and `kernel_ndim`, and
    implement `_member_input_channels`, `_member_output_shape`,
    `member_kernel_shape`, `output_channels` and `_apply` (one member). The
    member formulations `_apply_broadcast` (one input for every member) and
    `_apply_members` (one input per member) default to one application per
    member; subclasses fold the members into fewer, larger operations.

    Args:
        batch_shape: the members' shape (`()`: a single set of weights).
        layer_name: the layer's name, for error messages.
    """

    member_ndim = None
    kernel_ndim = None

    def __init__(self, batch_shape, layer_name):
        self.layer_name = layer_name
        self.members = Members(batch_shape, self.member_ndim, layer_name)

    @property
    def batch_shape(self):
        return self.members.shape

    @property
    def channel_axis(self):
        """The channel axis of one member's inputs and outputs."""
        return -1

    @property
    def channel_from_end(self):
        """The channel axis as a negative index, valid with member axes."""
        return -1

    # -- shapes -----------------------------------------------------------

    def input_channels(self, input_shape):
        """Check an input shape and return its number of channels."""
        return self._member_input_channels(
            self.members.member_view(input_shape)
        )

    def output_shape(self, input_shape):
        shape = self._member_output_shape(self.members.member_view(input_shape))
        return self.members.output_shape(shape)

    def kernel_shape(self, in_channels):
        """The kernel's shape, member axes first."""
        return self.batch_shape + self.member_kernel_shape(in_channels)

    def bias_shape(self, in_channels):
        return self.batch_shape + (self.output_channels(in_channels),)

    def input_spec(self, input_shape, in_channels):
        """The `InputSpec` of a layer built for `input_shape`."""
        if not self.members:
            return keras.layers.InputSpec(
                ndim=len(input_shape), axes={self.channel_axis: in_channels}
            )
        return keras.layers.InputSpec(
            min_ndim=self.member_ndim,
            max_ndim=self.member_ndim + len(self.batch_shape),
            axes={self.channel_from_end: in_channels},
        )

    def factor_shapes(self, inputs):
        """Shapes of per-example, per-member, per-channel factors.

        `((N, *batch_shape, in_channels), (N, *batch_shape, out_channels))`,
        for `modulate`: one factor per example, member and channel,
        broadcast over every other axis.
        """
        channels = inputs.shape[self.channel_from_end]
        prefix = (ops.shape(inputs)[0], *self.batch_shape)
        return prefix + (channels,), prefix + (self.output_channels(channels),)

    # -- application ------------------------------------------------------

    def __call__(self, inputs, kernel):
        """`f(inputs, kernel)`; a kernel without member axes is shared."""
        members = self.members
        if not members:
            return self._apply(inputs, kernel)
        if len(kernel.shape) == self.kernel_ndim:
            # One kernel for every member: the members are more examples.
            if not members.has_axes(inputs.shape):
                ones = ops.ones(
                    (1, *self.batch_shape) + (1,) * (self.member_ndim - 1),
                    dtype=inputs.dtype,
                )
                inputs = members.expand(inputs) * ones
            return members.unfold(self._apply(members.fold(inputs), kernel))
        kernel = members.flat_kernel(kernel)
        if members.has_axes(inputs.shape):
            outputs = self._apply_members(members.flat_inputs(inputs), kernel)
        else:
            outputs = self._apply_broadcast(inputs, kernel)
        return members.restore(outputs)

    def modulate(self, inputs, kernel, in_factors, out_factors):
        """`f(inputs * in_factors, kernel) * out_factors`.

        The factors have the shapes of `factor_shapes` (or size 1 along the
        examples): Flipout's random signs, rank-1's per-channel scales. An
        input shared by the members becomes one input per member here.
        """
        inputs = self.members.expand(inputs)
        scaled = inputs * self._factor_view(in_factors, len(inputs.shape))
        outputs = self(scaled, kernel)
        return outputs * self._factor_view(out_factors, len(outputs.shape))

    def _factor_view(self, factors, ndim):
        """`(N, *batch_shape, C)` factors broadcasting over a tensor of rank
        `ndim` (with member axes) along every axis but the channel's."""
        k = len(self.batch_shape)
        channel = ndim + self.channel_from_end
        for _ in range(channel - k - 1):
            factors = ops.expand_dims(factors, k + 1)
        for _ in range(-self.channel_from_end - 1):
            factors = ops.expand_dims(factors, -1)
        return factors

    def add_bias(self, outputs, bias):
        """`outputs + bias` along the channel axis (bias has member axes)."""
        if not self.members and self.channel_axis == -1:
            return outputs + bias
        member_rank = len(outputs.shape) - len(self.batch_shape)
        shape = [1] * (member_rank - 1)
        shape[self.channel_from_end] = bias.shape[-1]
        return outputs + ops.reshape(bias, self.batch_shape + tuple(shape))

    def _apply_broadcast(self, inputs, kernel):
        """Every member on the same inputs: `(N, ...)` -> `(N, B, ...)`."""
        return ops.stack(
            [self._apply(inputs, kernel[b]) for b in range(kernel.shape[0])],
            axis=1,
        )

    def _apply_members(self, inputs, kernel):
        """Member `b` on `inputs[:, b]`: `(N, B, ...)` -> `(N, B, ...)`."""
        return ops.stack(
            [
                self._apply(inputs[:, b], kernel[b])
                for b in range(kernel.shape[0])
            ],
            axis=1,
        )
