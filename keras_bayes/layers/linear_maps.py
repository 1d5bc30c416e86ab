"""The linear maps behind the layers: convolution and dense.

A linear map holds a layer's validated geometry (filters, kernel size,
strides, ...) and knows everything shape-related: the kernel and bias
shapes, the output shape, how to apply a kernel to inputs, and the shapes of
the Flipout sign tensors. Layers combine one linear map with an estimator
(`variational.py`) or with a plain kernel (`batched.py`), so every rank and
layer kind shares one implementation of each.
"""

from keras import ops

from keras_bayes import _validation


def _conv_output_length(length, kernel, stride, dilation, padding):
    if length is None:
        return None
    if padding == "same" or padding == "causal":
        return -(-length // stride)
    span = dilation * (kernel - 1) + 1
    return (length - span) // stride + 1


def _conv_transpose_output_length(
    length, kernel, stride, dilation, padding, output_padding
):
    if length is None:
        return None
    span = dilation * (kernel - 1) + 1
    if output_padding is None:
        if padding == "valid":
            return length * stride + max(span - stride, 0)
        return length * stride
    pad = span // 2 if padding == "same" else 0
    return (length - 1) * stride + span - 2 * pad + output_padding


class LinearMap:
    """Interface shared by `ConvMap` and `DenseMap`."""

    filters = None

    @property
    def channel_axis(self):
        return -1

    def bias_shape(self):
        return (self.filters,)

    def add_bias(self, outputs, bias):
        if self.channel_axis == -1:
            return outputs + bias
        rank = len(outputs.shape)
        shape = [1] * rank
        shape[self.channel_axis] = self.filters
        return outputs + ops.reshape(bias, shape)

    def sign_shapes(self, inputs):
        """Shapes of Flipout's input and output sign tensors.

        One sign per example and channel, broadcast over every other axis.
        """
        rank = len(inputs.shape)
        batch = ops.shape(inputs)[0]
        in_shape = [batch] + [1] * (rank - 1)
        out_shape = list(in_shape)
        in_shape[self.channel_axis] = inputs.shape[self.channel_axis]
        out_shape[self.channel_axis] = self.filters
        return tuple(in_shape), tuple(out_shape)


class ConvMap(LinearMap):
    """Convolution (or transposed convolution) geometry of rank 1, 2 or 3."""

    def __init__(
        self,
        rank,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
        transpose=False,
        output_padding=None,
    ):
        self.rank = rank
        self.transpose = transpose
        self.filters = _validation.positive_int(filters, "filters")
        self.kernel_size = _validation.int_tuple(
            kernel_size, rank, "kernel_size"
        )
        self.strides = _validation.int_tuple(strides, rank, "strides")
        self.dilation_rate = _validation.int_tuple(
            dilation_rate, rank, "dilation_rate"
        )
        self.padding = _validation.padding(
            padding, allow_causal=rank == 1 and not transpose
        )
        self.data_format = _validation.data_format(data_format)
        self.groups = _validation.positive_int(groups, "groups")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "Invalid value for arguments `strides` and `dilation_rate`. "
                "A stride greater than 1 cannot be combined with a dilation "
                f"rate greater than 1. Received: strides={strides!r}, "
                f"dilation_rate={dilation_rate!r}"
            )
        if self.filters % self.groups:
            raise _validation.invalid(
                "groups",
                f"Expected a divisor of `filters` (filters={self.filters}).",
                groups,
            )
        self.output_padding = None
        if output_padding is not None:
            self.output_padding = _validation.int_tuple(
                output_padding, rank, "output_padding", allow_zero=True
            )
            for pad, stride in zip(self.output_padding, self.strides):
                if pad >= stride:
                    raise _validation.invalid(
                        "output_padding",
                        "Expected every entry to be smaller than the "
                        f"matching stride (strides={self.strides}).",
                        output_padding,
                    )

    @property
    def channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def get_config(self):
        config = {
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
        }
        if self.transpose:
            config["output_padding"] = self.output_padding
        else:
            config["groups"] = self.groups
        return config

    def input_channels(self, input_shape, layer_name):
        """Check an input shape and return its number of channels."""
        if len(input_shape) != self.rank + 2:
            raise ValueError(
                f"Input 0 of layer '{layer_name}' is incompatible with the "
                f"layer: expected ndim={self.rank + 2} (batch, "
                f"{self.rank} spatial dimension(s), channels), found "
                f"ndim={len(input_shape)}. Full shape received: "
                f"{tuple(input_shape)}"
            )
        channels = input_shape[self.channel_axis]
        if channels is None:
            raise ValueError(
                f"The channel dimension of the inputs of layer "
                f"'{layer_name}' should be defined. Found None. Full shape "
                f"received: {tuple(input_shape)}"
            )
        if channels % self.groups:
            raise ValueError(
                f"The number of input channels of layer '{layer_name}' must "
                f"be divisible by `groups`. Received: groups={self.groups}, "
                f"input channels={channels}"
            )
        return channels

    def kernel_shape(self, in_channels):
        if self.transpose:
            return self.kernel_size + (self.filters, in_channels)
        return self.kernel_size + (in_channels // self.groups, self.filters)

    def _spatial_axes(self):
        if self.data_format == "channels_last":
            return tuple(range(1, self.rank + 1))
        return tuple(range(2, self.rank + 2))

    def output_shape(self, input_shape, layer_name):
        input_shape = tuple(input_shape)
        self.input_channels(input_shape, layer_name)
        shape = list(input_shape)
        for i, axis in enumerate(self._spatial_axes()):
            if self.transpose:
                pad = self.output_padding
                length = _conv_transpose_output_length(
                    input_shape[axis],
                    self.kernel_size[i],
                    self.strides[i],
                    self.dilation_rate[i],
                    self.padding,
                    None if pad is None else pad[i],
                )
            else:
                length = _conv_output_length(
                    input_shape[axis],
                    self.kernel_size[i],
                    self.strides[i],
                    self.dilation_rate[i],
                    self.padding,
                )
            if length is not None and length <= 0:
                raise ValueError(
                    f"The inputs of layer '{layer_name}' are too small along "
                    f"spatial axis {axis}: size {input_shape[axis]} gives an "
                    f"empty output with kernel_size={self.kernel_size}, "
                    f"dilation_rate={self.dilation_rate} and "
                    f"padding='{self.padding}'. Full shape received: "
                    f"{input_shape}"
                )
            shape[axis] = length
        shape[self.channel_axis] = self.filters
        return tuple(shape)

    def __call__(self, inputs, kernel):
        padding = self.padding
        if padding == "causal":
            # Pad only the past so that output t sees inputs up to t.
            left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
            pads = [[0, 0], [left, 0], [0, 0]]
            if self.data_format == "channels_first":
                pads = [[0, 0], [0, 0], [left, 0]]
            inputs = ops.pad(inputs, pads)
            padding = "valid"
        if self.transpose:
            return ops.conv_transpose(
                inputs,
                kernel,
                strides=self.strides,
                padding=padding,
                output_padding=self.output_padding,
                data_format=self.data_format,
                dilation_rate=self.dilation_rate,
            )
        return ops.conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )


class DenseMap(LinearMap):
    """A dense map over the last axis: `inputs @ kernel`."""

    def __init__(self, units):
        self.filters = _validation.positive_int(units, "units")

    def get_config(self):
        return {"units": self.filters}

    def input_channels(self, input_shape, layer_name):
        if len(input_shape) < 2:
            raise ValueError(
                f"Input 0 of layer '{layer_name}' is incompatible with the "
                "layer: expected min_ndim=2, found "
                f"ndim={len(input_shape)}. Full shape received: "
                f"{tuple(input_shape)}"
            )
        if input_shape[-1] is None:
            raise ValueError(
                f"The last dimension of the inputs of layer '{layer_name}' "
                "should be defined. Found None. Full shape received: "
                f"{tuple(input_shape)}"
            )
        return input_shape[-1]

    def kernel_shape(self, in_channels):
        return (in_channels, self.filters)

    def output_shape(self, input_shape, layer_name):
        self.input_channels(input_shape, layer_name)
        return tuple(input_shape)[:-1] + (self.filters,)

    def __call__(self, inputs, kernel):
        return ops.matmul(inputs, kernel)
