"""Deterministic convolutions with a batch of weights (`batch_shape`).

A `BatchedConv2D(..., batch_shape=(B,))` holds `B` independent kernels and
biases (the members) and costs about one convolution rather than `B`: an
ensemble, or the members of a hyper-network, in one layer. With
`batch_shape=()` each layer is exactly the matching `keras.layers` layer.
"""

import keras

from keras_bayes import saving
from keras_bayes._export import public_class
from keras_bayes.layers import member_weights
from keras_bayes.layers.geometry import (
    ConvGeometry,
    ConvTransposeGeometry,
    DenseGeometry,
    DepthwiseGeometry,
)

_COMMON_ARGS_DOC = """
        dilation_rate: int or tuple of `rank` ints. Defaults to 1.
        activation: activation applied to the outputs.
        use_bias: whether the layer has a bias.
        kernel_initializer, bias_initializer: initializers of one member's
            kernel and bias (fan-based ones see one member's shape). Default
            to `"glorot_uniform"` and `"zeros"`.
        kernel_regularizer, bias_regularizer: applied to each member and
            summed.
        activity_regularizer: as in Keras.
        kernel_constraint, bias_constraint: applied to each member.
        batch_shape: shape of the batch of members; any tuple of positive
            ints. Defaults to `()`: a plain Keras layer.

    `layer.kernel` has shape `batch_shape + kernel_shape` and `layer.bias`
    shape `batch_shape + (filters,)`.

    Input shape:
        `(batch, *spatial, channels)` (channels_last) or
        `(batch, channels, *spatial)` (channels_first), fed to every
        member; or `(batch, *batch_shape, *spatial, channels)` (resp.
        `(batch, *batch_shape, channels, *spatial)`), one input per member.

    Output shape:
        `(batch, *batch_shape, *new_spatial, filters)` (channels_last) or
        `(batch, *batch_shape, filters, *new_spatial)` (channels_first).
        Member `b` gives what the Keras layer with member `b`'s weights
        gives.
"""

_CONV_ARGS_DOC = (
    """
    Args:
        filters: number of output channels of each member.
        kernel_size: int or tuple of `rank` ints.
        strides: int or tuple of `rank` ints. Defaults to 1.
        padding: `"valid"` or `"same"` (case-insensitive); the 1D layer also
            takes `"causal"`.
        data_format: `"channels_last"`, `"channels_first"`, or None for
            `keras.config.image_data_format()`.
        groups: number of channel groups within each member."""
    + _COMMON_ARGS_DOC
    + """
    Example:

    >>> ensemble = kb.layers.BatchedConv2D(8, 3, batch_shape=(4,))
    >>> ensemble(np.zeros((2, 16, 16, 3))).shape  # one input for all
    (2, 4, 14, 14, 8)
    >>> ensemble(np.zeros((2, 4, 16, 16, 3))).shape  # one per member
    (2, 4, 14, 14, 8)
"""
)

_TRANSPOSE_ARGS_DOC = (
    """
    Args:
        filters: number of output channels of each member.
        kernel_size: int or tuple of `rank` ints.
        strides: int or tuple of `rank` ints. Defaults to 1.
        padding: `"valid"` or `"same"` (case-insensitive).
        output_padding: None, or an int or tuple of `rank` ints, each
            smaller than the matching stride.
        data_format: `"channels_last"`, `"channels_first"`, or None for
            `keras.config.image_data_format()`."""
    + _COMMON_ARGS_DOC
    + """
    Example:

    >>> decoders = kb.layers.BatchedConv2DTranspose(
    ...     3, 3, strides=2, padding="same", batch_shape=(4,))
    >>> decoders(np.zeros((2, 4, 8, 8, 16))).shape
    (2, 4, 16, 16, 3)
"""
)


_DEPTHWISE_ARGS_DOC = (
    """
    Args:
        kernel_size: int or tuple of `rank` ints.
        strides: int or tuple of `rank` ints. Defaults to 1.
        padding: `"valid"` or `"same"` (case-insensitive).
        depth_multiplier: output channels per input channel. Defaults to 1.
        data_format: `"channels_last"`, `"channels_first"`, or None for
            `keras.config.image_data_format()`."""
    + _COMMON_ARGS_DOC.replace("filters", "channels * depth_multiplier")
    + """
    Example:

    >>> ensemble = kb.layers.BatchedDepthwiseConv2D(3, batch_shape=(4,))
    >>> ensemble(np.zeros((2, 16, 16, 3))).shape
    (2, 4, 14, 14, 3)
"""
)

_DENSE_ARGS_DOC = """
    Args:
        units: number of output units of each member.
        activation: activation applied to the outputs.
        use_bias: whether the layer has a bias.
        kernel_initializer, bias_initializer: initializers of one member's
            kernel and bias. Default to `"glorot_uniform"` and `"zeros"`.
        kernel_regularizer, bias_regularizer: applied to each member and
            summed.
        activity_regularizer: as in Keras.
        kernel_constraint, bias_constraint: applied to each member.
        batch_shape: shape of the batch of members; any tuple of positive
            ints. Defaults to `()`: a plain `keras.layers.Dense`.

    `layer.kernel` has shape `batch_shape + (in_features, units)` and
    `layer.bias` shape `batch_shape + (units,)`.

    Input shape:
        `(batch, ..., in_features)`, fed to every member; or, with
        members, `(batch, *batch_shape, in_features)`, one input per
        member.

    Output shape:
        `(batch, *batch_shape, ..., units)`. Member `b` gives what
        `keras.layers.Dense` with member `b`'s weights gives.

    Example:

    >>> heads = kb.layers.BatchedDense(10, batch_shape=(4,))
    >>> heads(np.zeros((2, 32))).shape
    (2, 4, 10)
"""


class BatchedLayer(member_weights.PlainWeightArguments, keras.layers.Layer):
    """Base of the batched layers: plain weights with members.

    The geometry mixin (`geometry.py`) sets the map, `activation` and
    `use_bias`.
    """

    def build(self, input_shape):
        linear_map = self._map
        in_channels = linear_map.input_channels(input_shape)
        self.kernel = member_weights.add_member_weight(
            self,
            "kernel",
            linear_map.kernel_shape(in_channels),
            self.batch_shape,
        )
        self.bias = None
        if self.use_bias:
            self.bias = member_weights.add_member_weight(
                self,
                "bias",
                linear_map.bias_shape(in_channels),
                self.batch_shape,
            )
        self.input_spec = linear_map.input_spec(input_shape, in_channels)

    def call(self, inputs):
        outputs = self._map(inputs, self.kernel)
        if self.use_bias:
            outputs = self._map.add_bias(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        config["activity_regularizer"] = keras.regularizers.serialize(
            self.activity_regularizer
        )
        return config

    def save_own_variables(self, store):
        saving.save_variables(self, store)

    def load_own_variables(self, store):
        saving.load_variables(self, store)


class BatchedConv(ConvGeometry, BatchedLayer):
    """Base of `BatchedConv1D/2D/3D`; subclasses fix `rank`."""


class BatchedConvTranspose(ConvTransposeGeometry, BatchedLayer):
    """Base of `BatchedConv1D/2D/3DTranspose`; subclasses fix `rank`."""


class BatchedDepthwiseConv(DepthwiseGeometry, BatchedLayer):
    """Base of `BatchedDepthwiseConv1D/2D`; subclasses fix `rank`."""


class BatchedDenseBase(DenseGeometry, BatchedLayer):
    """Base of `BatchedDense`."""


_CONV_DOC = (
    "{rank}D convolution with a batch of independent weights (`batch_shape`).\n"
)
_TRANSPOSE_DOC = (
    "{rank}D transposed convolution with a batch of independent weights "
    "(`batch_shape`).\n"
)


def _batched(name, base, rank, summary, args_doc):
    doc = summary.format(rank=rank) + "\n" + args_doc
    return public_class(name, base, doc, rank=rank)


BatchedConv1D = _batched(
    "BatchedConv1D", BatchedConv, 1, _CONV_DOC, _CONV_ARGS_DOC
)
BatchedConv2D = _batched(
    "BatchedConv2D", BatchedConv, 2, _CONV_DOC, _CONV_ARGS_DOC
)
BatchedConv3D = _batched(
    "BatchedConv3D", BatchedConv, 3, _CONV_DOC, _CONV_ARGS_DOC
)
BatchedConv1DTranspose = _batched(
    "BatchedConv1DTranspose",
    BatchedConvTranspose,
    1,
    _TRANSPOSE_DOC,
    _TRANSPOSE_ARGS_DOC,
)
BatchedConv2DTranspose = _batched(
    "BatchedConv2DTranspose",
    BatchedConvTranspose,
    2,
    _TRANSPOSE_DOC,
    _TRANSPOSE_ARGS_DOC,
)
BatchedConv3DTranspose = _batched(
    "BatchedConv3DTranspose",
    BatchedConvTranspose,
    3,
    _TRANSPOSE_DOC,
    _TRANSPOSE_ARGS_DOC,
)
BatchedDepthwiseConv1D = _batched(
    "BatchedDepthwiseConv1D",
    BatchedDepthwiseConv,
    1,
    "{rank}D depthwise convolution with a batch of independent weights "
    "(`batch_shape`).\n",
    _DEPTHWISE_ARGS_DOC,
)
BatchedDepthwiseConv2D = _batched(
    "BatchedDepthwiseConv2D",
    BatchedDepthwiseConv,
    2,
    "{rank}D depthwise convolution with a batch of independent weights "
    "(`batch_shape`).\n",
    _DEPTHWISE_ARGS_DOC,
)
BatchedDense = public_class(
    "BatchedDense",
    BatchedDenseBase,
    "Dense layer with a batch of independent weights (`batch_shape`).\n"
    + _DENSE_ARGS_DOC,
)
