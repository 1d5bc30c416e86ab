"""`ConvMap`: a convolution, with groups, of rank 1, 2 or 3."""

from keras import ops

from keras_bayes import _validation, config
from keras_bayes.layers import members
from keras_bayes.layers.maps.spatial import SpatialMap


class ConvMap(SpatialMap):
    """`keras.ops.conv` with Keras' `ConvND` arguments.

    Kernel layout: `kernel_size + (in_channels // groups, filters)`.
    """

    operation = staticmethod(ops.conv)

    allow_causal = True

    def __init__(self, rank, arguments, batch_shape=(), layer_name=None):
        self.filters = _validation.positive_int(arguments["filters"], "filters")
        groups = arguments.get("groups", 1)
        self.groups = _validation.positive_int(groups, "groups")
        super().__init__(rank, arguments, batch_shape, layer_name)
        if self.filters % self.groups:
            raise _validation.invalid(
                "groups",
                f"Expected a divisor of `filters` (filters={self.filters}).",
                groups,
            )

    def get_config(self):
        return {
            "filters": self.filters,
            **super().get_config(),
            "groups": self.groups,
        }

    def output_channels(self, in_channels):
        return self.filters

    def member_kernel_shape(self, in_channels):
        return self.kernel_size + (in_channels // self.groups, self.filters)

    def _member_input_channels(self, input_shape):
        channels = super()._member_input_channels(input_shape)
        if channels % self.groups:
            raise ValueError(
                "The number of input channels of layer "
                f"'{self.layer_name}' must be divisible by `groups`. "
                f"Received: groups={self.groups}, input channels={channels}"
            )
        return channels

    # Kernels arrive with one flat member axis in front: `(B, *kernel)`.

    def _apply_broadcast(self, inputs, kernel):
        # Every member sees the same input: the members' kernels side by
        # side on the output axis make a single convolution. Each group's
        # outputs stay together: (B, *K, Cg, G * Fg) -> (*K, Cg, G, B, Fg).
        count, rank, groups = kernel.shape[0], self.rank, self.groups
        kernel = ops.reshape(
            kernel, (count,) + tuple(kernel.shape[1:-1]) + (groups, -1)
        )
        kernel = ops.transpose(
            kernel, (*range(1, rank + 2), rank + 2, 0, rank + 3)
        )
        kernel = ops.reshape(kernel, tuple(kernel.shape[: rank + 1]) + (-1,))
        return self._apply_split(inputs, kernel, groups, count, self.filters)

    def _apply_members(self, inputs, kernel):
        if config.member_strategy() == "per_member":
            return self._per_member(inputs, kernel)
        # Member b's group g is group b * G + g of one grouped convolution:
        # channels and kernels flatten member-major.
        rank = self.rank
        kernel = ops.transpose(
            kernel, (*range(1, rank + 2), 0, rank + 2)
        )  # (*K, Cg, B, F)
        kernel = ops.reshape(kernel, tuple(kernel.shape[: rank + 1]) + (-1,))
        merged = members.merge_channels(inputs, rank, self.channels_first)
        return self._apply_split(
            merged, kernel, 1, inputs.shape[1], self.filters
        )
