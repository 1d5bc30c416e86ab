"""`DepthwiseMap`: a depthwise convolution of rank 1 or 2."""

from keras import ops

from keras_bayes import _validation, config
from keras_bayes.layers import members
from keras_bayes.layers.maps.spatial import SpatialMap


class DepthwiseMap(SpatialMap):
    """`keras.ops.depthwise_conv` with Keras' `DepthwiseConvND` arguments.

    Kernel layout: `kernel_size + (in_channels, depth_multiplier)`; output
    channel `c * depth_multiplier + m` comes from input channel `c`.
    """

    operation = staticmethod(ops.depthwise_conv)

    def __init__(self, rank, arguments, batch_shape=(), layer_name=None):
        self.depth_multiplier = _validation.positive_int(
            arguments.get("depth_multiplier", 1), "depth_multiplier"
        )
        super().__init__(rank, arguments, batch_shape, layer_name)

    def get_config(self):
        return {
            **super().get_config(),
            "depth_multiplier": self.depth_multiplier,
        }

    def output_channels(self, in_channels):
        return in_channels * self.depth_multiplier

    def member_kernel_shape(self, in_channels):
        return self.kernel_size + (in_channels, self.depth_multiplier)

    def _apply_broadcast(self, inputs, kernel):
        # The members' multipliers side by side: (B, *K, C, M) ->
        # (*K, C, B * M); output channel (c, b, m) goes to member b.
        count, rank = kernel.shape[0], self.rank
        channels, multiplier = kernel.shape[-2], self.depth_multiplier
        kernel = ops.transpose(
            kernel, (*range(1, rank + 2), 0, rank + 2)
        )  # (*K, C, B, M)
        kernel = ops.reshape(kernel, self.kernel_size + (channels, -1))
        # Channels (C, B, M) are C groups of B members.
        return self._apply_split(
            inputs, kernel, channels, count, channels * multiplier
        )

    def _apply_members(self, inputs, kernel):
        if config.member_strategy() == "per_member":
            return self._per_member(inputs, kernel)
        # Member-major channels: input channel b * C + c with multipliers
        # kernel[b, ..., c, :] gives outputs b * C * M + c * M + m.
        rank = self.rank
        kernel = ops.transpose(
            kernel, (*range(1, rank + 1), 0, rank + 1, rank + 2)
        )  # (*K, B, C, M)
        kernel = ops.reshape(
            kernel, self.kernel_size + (-1, self.depth_multiplier)
        )
        merged = members.merge_channels(inputs, rank, self.channels_first)
        channels = inputs.shape[self.channel_from_end]
        return self._apply_split(
            merged, kernel, 1, inputs.shape[1], channels * self.depth_multiplier
        )
