"""Deterministic convolutions with a batch of weights (`batch_shape`).

A `BatchedConv2D(..., batch_shape=(B,))` holds `B` independent kernels and
biases (the members) and costs about one convolution rather than `B`: an
ensemble, or the members of a hyper-network, in one layer. With
`batch_shape=()` each layer is exactly the matching `keras.layers` layer.
"""

import keras

from keras_bayes._export import register
from keras_bayes.layers import linear_maps
from keras_bayes.layers.conv import ConvArguments, _map_attribute
from keras_bayes.layers.linear_maps import ConvMap

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


class BatchedLayer(ConvArguments, keras.layers.Layer):
    """Base of the batched layers: a `ConvMap` and plain weights.

    Subclasses create `self._linear_map` after calling `__init__`.
    """

    rank = None

    def __init__(
        self,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self._linear_map = None

    def _add_member_weight(self, name, shape, initializer, regularizer, cons):
        batch_shape = self.batch_shape
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=linear_maps.member_initializer(
                initializer, batch_shape
            ),
            regularizer=linear_maps.member_regularizer(
                regularizer, batch_shape
            ),
            constraint=linear_maps.member_constraint(cons, batch_shape),
        )

    def build(self, input_shape):
        linear_map = self._linear_map
        in_channels = linear_map.input_channels(input_shape, self.name)
        self.kernel = self._add_member_weight(
            "kernel",
            linear_map.kernel_shape(in_channels),
            self.kernel_initializer,
            self.kernel_regularizer,
            self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self._add_member_weight(
                "bias",
                linear_map.bias_shape(),
                self.bias_initializer,
                self.bias_regularizer,
                self.bias_constraint,
            )
        self.input_spec = linear_map.input_spec(input_shape, in_channels)

    def call(self, inputs):
        outputs = self._linear_map(inputs, self.kernel)
        if self.use_bias:
            outputs = self._linear_map.add_bias(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return self._linear_map.output_shape(input_shape, self.name)

    def get_config(self):
        config = super().get_config()
        config.update(self._linear_map.get_config())
        serialize = {
            "initializer": keras.initializers.serialize,
            "regularizer": keras.regularizers.serialize,
            "constraint": keras.constraints.serialize,
        }
        config["activation"] = keras.activations.serialize(self.activation)
        config["use_bias"] = self.use_bias
        for weight in ("kernel", "bias"):
            for kind, to_config in serialize.items():
                key = f"{weight}_{kind}"
                config[key] = to_config(getattr(self, key))
        config["activity_regularizer"] = keras.regularizers.serialize(
            self.activity_regularizer
        )
        return config


class BatchedConv(BatchedLayer):
    """Base of `BatchedConv1D/2D/3D`; subclasses fix `rank`."""

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        batch_shape=(),
        **kwargs,
    ):
        super().__init__(
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        self._linear_map = ConvMap(
            self.rank,
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            groups=groups,
            batch_shape=batch_shape,
        )

    groups = _map_attribute("groups")


class BatchedConvTranspose(BatchedLayer):
    """Base of `BatchedConv1D/2D/3DTranspose`; subclasses fix `rank`."""

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        output_padding=None,
        data_format=None,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        batch_shape=(),
        **kwargs,
    ):
        super().__init__(
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        self._linear_map = ConvMap(
            self.rank,
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            transpose=True,
            output_padding=output_padding,
            batch_shape=batch_shape,
        )

    output_padding = _map_attribute("output_padding")


def _batched_layer(rank, summary, args_doc):
    def decorate(cls):
        cls.rank = rank
        cls.__doc__ = summary.format(rank=rank) + "\n" + args_doc
        return register(cls)

    return decorate


_CONV_DOC = (
    "{rank}D convolution with a batch of independent weights (`batch_shape`).\n"
)
_TRANSPOSE_DOC = (
    "{rank}D transposed convolution with a batch of independent weights "
    "(`batch_shape`).\n"
)


@_batched_layer(1, _CONV_DOC, _CONV_ARGS_DOC)
class BatchedConv1D(BatchedConv):
    pass


@_batched_layer(2, _CONV_DOC, _CONV_ARGS_DOC)
class BatchedConv2D(BatchedConv):
    pass


@_batched_layer(3, _CONV_DOC, _CONV_ARGS_DOC)
class BatchedConv3D(BatchedConv):
    pass


@_batched_layer(1, _TRANSPOSE_DOC, _TRANSPOSE_ARGS_DOC)
class BatchedConv1DTranspose(BatchedConvTranspose):
    pass


@_batched_layer(2, _TRANSPOSE_DOC, _TRANSPOSE_ARGS_DOC)
class BatchedConv2DTranspose(BatchedConvTranspose):
    pass


@_batched_layer(3, _TRANSPOSE_DOC, _TRANSPOSE_ARGS_DOC)
class BatchedConv3DTranspose(BatchedConvTranspose):
    pass
