"""`SpatialMap`: the geometry shared by every convolution map."""

import keras
from keras import ops

from keras_bayes import _validation, config
from keras_bayes.layers import members, shapes
from keras_bayes.layers.maps.base import LinearMap


def _torch_channels_view(rank):
    # PyTorch has channels-last memory formats for 2D and 3D convolutions
    # only (`benchmarks/run.py` measured the 2D training step).
    return (
        config.torch_channels_view()
        and keras.backend.backend() == "torch"
        and rank > 1
    )


# Keras' defaults of the arguments every convolution takes.
SPATIAL_DEFAULTS = {
    "strides": 1,
    "padding": "valid",
    "data_format": None,
    "dilation_rate": 1,
}


class SpatialMap(LinearMap):
    """Kernel size, strides, padding, data format and dilation of rank 1-3.

    Args:
        rank: 1, 2 or 3.
        arguments: the layer's Keras arguments by name (`kernel_size`,
            and optionally `strides`, `padding`, `data_format`,
            `dilation_rate`, with Keras' defaults, plus the subclass's).
        batch_shape: the members' shape.
        layer_name: the layer's name, for error messages.

    Subclasses set `operation` (the `keras.ops` function of one member)
    and implement `member_kernel_shape` and `output_channels`; a
    transposed convolution also `_output_length` and `_operation`.
    """

    allow_causal = False
    operation = None

    def __init__(self, rank, arguments, batch_shape=(), layer_name=None):
        arguments = {**SPATIAL_DEFAULTS, **arguments}
        strides = arguments["strides"]
        dilation_rate = arguments["dilation_rate"]
        self.rank = rank
        self.member_ndim = rank + 2
        self.kernel_ndim = rank + 2
        self.kernel_size = _validation.int_tuple(
            arguments["kernel_size"], rank, "kernel_size"
        )
        self.strides = _validation.int_tuple(strides, rank, "strides")
        self.dilation_rate = _validation.int_tuple(
            dilation_rate, rank, "dilation_rate"
        )
        self.padding = _validation.padding(
            arguments["padding"], allow_causal=self.allow_causal and rank == 1
        )
        self.data_format = _validation.data_format(arguments["data_format"])
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "Invalid value for arguments `strides` and `dilation_rate`. "
                "A stride greater than 1 cannot be combined with a dilation "
                f"rate greater than 1. Received: strides={strides!r}, "
                f"dilation_rate={dilation_rate!r}"
            )
        super().__init__(batch_shape, layer_name)

    @property
    def channels_first(self):
        return self.data_format == "channels_first"

    @property
    def channel_axis(self):
        return 1 if self.channels_first else -1

    @property
    def channel_from_end(self):
        return -self.rank - 1 if self.channels_first else -1

    def get_config(self):
        return {
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
        }

    # -- one member -------------------------------------------------------

    def _member_input_channels(self, input_shape):
        name = self.layer_name
        if len(input_shape) != self.rank + 2:
            raise ValueError(
                f"Input 0 of layer '{name}' is incompatible with the "
                f"layer: expected ndim={self.rank + 2} (batch, "
                f"{self.rank} spatial dimension(s), channels), found "
                f"ndim={len(input_shape)}. Full shape received: "
                f"{tuple(input_shape)}"
            )
        channels = input_shape[self.channel_axis]
        if channels is None:
            raise ValueError(
                f"The channel dimension of the inputs of layer '{name}' "
                "should be defined. Found None. Full shape received: "
                f"{tuple(input_shape)}"
            )
        return channels

    def _spatial_axes(self):
        first = 2 if self.channels_first else 1
        return tuple(range(first, first + self.rank))

    def _member_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        channels = self._member_input_channels(input_shape)
        shape = list(input_shape)
        for i, axis in enumerate(self._spatial_axes()):
            length = self._output_length(input_shape[axis], i)
            if length is not None and length <= 0:
                raise ValueError(
                    f"The inputs of layer '{self.layer_name}' are too small "
                    f"along spatial axis {axis}: size {input_shape[axis]} "
                    f"gives an empty output with kernel_size="
                    f"{self.kernel_size}, dilation_rate={self.dilation_rate} "
                    f"and padding='{self.padding}'. Full shape received: "
                    f"{input_shape}"
                )
            shape[axis] = length
        shape[self.channel_axis] = self.output_channels(channels)
        return tuple(shape)

    def _output_length(self, length, axis):
        return shapes.conv_output_length(
            length,
            self.kernel_size[axis],
            self.strides[axis],
            self.dilation_rate[axis],
            self.padding,
        )

    def _operation(self, inputs, kernel, padding, data_format):
        return type(self).operation(
            inputs,
            kernel,
            strides=self.strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=self.dilation_rate,
        )

    def _apply(self, inputs, kernel):
        """The operation on inputs without member axes."""
        padding = self.padding
        if padding == "causal":
            # Pad only the past so that output t sees inputs up to t.
            left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
            pads = [[0, 0], [left, 0], [0, 0]]
            if self.channels_first:
                pads = [[0, 0], [0, 0], [left, 0]]
            inputs = ops.pad(inputs, pads)
            padding = "valid"
        if self.channels_first or not _torch_channels_view(self.rank):
            return self._operation(inputs, kernel, padding, self.data_format)
        # PyTorch convolves channels-first tensors. Keras' own channels_last
        # path copies the input into that layout (and, for convolutions,
        # back into channels-last memory for oneDNN); a channels-first view
        # of the same memory costs no copy, and the output comes back as a
        # channels-last view. Same arithmetic. (`transpose`, not `moveaxis`:
        # the former also runs inside `vectorized_map`.)
        last = self.rank + 1
        inputs = ops.transpose(inputs, (0, last, *range(1, last)))
        outputs = self._operation(inputs, kernel, padding, "channels_first")
        return ops.transpose(outputs, (0, *range(2, last + 1), 1))

    def _per_member(self, inputs, kernel):
        """One operation per member on `(N, B, ...)` inputs."""
        return LinearMap._apply_members(self, inputs, kernel)

    def _apply_split(self, inputs, kernel, groups, count, filters):
        """`_apply` with a kernel that holds `count` members' kernels, its
        output channels `(groups, count, filters / groups)` split back to
        `(N, count, *member output)` (`members.split_channels`)."""
        return members.split_channels(
            self._apply(inputs, kernel),
            self.rank,
            self.channels_first,
            groups,
            count,
            filters,
        )
