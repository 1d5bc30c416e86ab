"""`ConvTransposeMap`: a transposed convolution of rank 1, 2 or 3."""

import keras
from keras import ops

from keras_bayes import _validation, config
from keras_bayes.layers import shapes
from keras_bayes.layers.maps.spatial import SpatialMap


class ConvTransposeMap(SpatialMap):
    """`keras.ops.conv_transpose` with Keras' `ConvNDTranspose` arguments.

    Kernel layout: `kernel_size + (filters, in_channels)`.
    """

    operation = staticmethod(ops.conv_transpose)

    def __init__(self, rank, arguments, batch_shape=(), layer_name=None):
        self.filters = _validation.positive_int(arguments["filters"], "filters")
        super().__init__(rank, arguments, batch_shape, layer_name)
        output_padding = arguments.get("output_padding")
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

    def get_config(self):
        config = {"filters": self.filters, **super().get_config()}
        config["output_padding"] = self.output_padding
        return config

    def output_channels(self, in_channels):
        return self.filters

    def member_kernel_shape(self, in_channels):
        return self.kernel_size + (self.filters, in_channels)

    def _output_length(self, length, axis):
        pad = self.output_padding
        return shapes.conv_transpose_output_length(
            length,
            self.kernel_size[axis],
            self.strides[axis],
            self.dilation_rate[axis],
            self.padding,
            None if pad is None else pad[axis],
        )

    def _operation(self, inputs, kernel, padding, data_format):
        return ops.conv_transpose(
            inputs,
            kernel,
            strides=self.strides,
            padding=padding,
            output_padding=self.output_padding,
            data_format=data_format,
            dilation_rate=self.dilation_rate,
        )

    def _apply_broadcast(self, inputs, kernel):
        # The members' kernels side by side on the output axis:
        # (B, *K, F, C) -> (*K, B * F, C).
        count, rank = kernel.shape[0], self.rank
        kernel = ops.transpose(
            kernel, (*range(1, rank + 1), 0, rank + 1, rank + 2)
        )
        kernel = ops.reshape(kernel, self.kernel_size + (-1, kernel.shape[-1]))
        return self._apply_split(inputs, kernel, 1, count, self.filters)

    def _apply_members(self, inputs, kernel):
        # `keras.ops.conv_transpose` has no groups. PyTorch and JAX lower a
        # `vectorized_map` over members to one grouped transposed
        # convolution; TensorFlow vectorizes it into a while loop, which
        # XLA (`jit_compile`) refuses, so it goes member by member.
        if (
            config.member_strategy() == "per_member"
            or keras.backend.backend() == "tensorflow"
        ):
            return self._per_member(inputs, kernel)
        outputs = ops.vectorized_map(
            lambda pair: self._apply(pair[0], pair[1]),
            (ops.moveaxis(inputs, 1, 0), kernel),
        )
        return ops.moveaxis(outputs, 0, 1)
