"""`PointwiseMap`: a 1x1 convolution as a product over the channel axis."""

from keras import ops

from keras_bayes.layers.maps.conv import ConvMap


class PointwiseMap(ConvMap):
    """A 1x1 convolution, stride 1 (the second stage of a separable one).

    Keras' kernel layout, `(1,) * rank + (in_channels, filters)`, applied
    as a matrix product over the channel axis: the same function as the
    convolution, and it runs on every device for either data format
    (TensorFlow's CPU kernels refuse some channels_first convolutions).
    """

    def __init__(self, rank, arguments, batch_shape=(), layer_name=None):
        arguments = {**arguments, "kernel_size": 1}
        super().__init__(rank, arguments, batch_shape, layer_name)

    def _apply(self, inputs, kernel):
        matrix = ops.reshape(kernel, tuple(kernel.shape[-2:]))
        if not self.channels_first:
            return ops.matmul(inputs, matrix)
        outputs = ops.matmul(ops.moveaxis(inputs, 1, -1), matrix)
        return ops.moveaxis(outputs, -1, 1)

    def _apply_members(self, inputs, kernel):
        # `(N, B, *member input)` with one matrix per member.
        matrices = ops.reshape(
            kernel, (kernel.shape[0],) + tuple(kernel.shape[-2:])
        )
        if not self.channels_first:
            return ops.einsum("nb...c,bcf->nb...f", inputs, matrices)
        return ops.einsum("nbc...,bcf->nbf...", inputs, matrices)
