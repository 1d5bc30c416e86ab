"""The Keras arguments of each layer family, written once.

A geometry mixin takes a family's Keras arguments with Keras' names and
defaults (`filters, kernel_size, strides, ...`), builds the layer's map
from them, exposes them as attributes and puts them in the config. Every
other argument (the Bayesian ones, or the batched layers' initializers)
goes on to the next base class. So `class Conv2DFlipout(ConvGeometry,
KernelLayer)` and `class BatchedConv2D(ConvGeometry, BatchedLayer)` share
one signature.
"""

import keras

from keras_bayes.layers.maps import (
    ConvMap,
    ConvTransposeMap,
    DenseMap,
    DepthwiseMap,
    EinsumMap,
    map_property,
)

# Arguments of the signatures below that do not describe the map.
_NOT_MAP = ("self", "kwargs", "__class__", "activation", "use_bias")


class Geometry:
    """Base of the geometry mixins.

    Subclasses set `map_class`, list the map arguments they expose as
    attributes in `exposed`, and end `__init__` with
    `self._finish(locals())`.
    """

    map_class = None
    rank = None
    exposed = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in cls.__dict__.get("exposed", ()):
            setattr(cls, name, map_property(name))

    def _finish(self, arguments):
        """Build the map from the signature's `locals()`."""
        map_arguments = {
            key: value
            for key, value in arguments.items()
            if key not in _NOT_MAP and key != "batch_shape"
        }
        self._map = self.map_class(
            self.rank, map_arguments, arguments["batch_shape"], self.name
        )
        self.activation = keras.activations.get(arguments["activation"])
        self.use_bias = bool(arguments["use_bias"])

    batch_shape = map_property("batch_shape")

    def compute_output_shape(self, input_shape):
        return self._map.output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(self._map.get_config())
        config["batch_shape"] = self.batch_shape
        config["activation"] = keras.activations.serialize(self.activation)
        config["use_bias"] = self.use_bias
        return config


class ConvGeometry(Geometry):
    """`keras.layers.ConvND`'s arguments; the class attribute `rank`."""

    map_class = ConvMap
    exposed = (
        "filters",
        "kernel_size",
        "strides",
        "padding",
        "data_format",
        "dilation_rate",
        "groups",
    )

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
        batch_shape=(),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._finish(locals())


class ConvTransposeGeometry(Geometry):
    """`keras.layers.ConvNDTranspose`'s arguments; the attribute `rank`."""

    map_class = ConvTransposeMap
    exposed = (
        "filters",
        "kernel_size",
        "strides",
        "padding",
        "output_padding",
        "data_format",
        "dilation_rate",
    )

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
        batch_shape=(),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._finish(locals())


class DepthwiseGeometry(Geometry):
    """`keras.layers.DepthwiseConvND`'s arguments; the attribute `rank`."""

    map_class = DepthwiseMap
    exposed = (
        "kernel_size",
        "strides",
        "padding",
        "depth_multiplier",
        "data_format",
        "dilation_rate",
    )

    def __init__(
        self,
        kernel_size,
        strides=1,
        padding="valid",
        depth_multiplier=1,
        data_format=None,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        batch_shape=(),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._finish(locals())


class DenseGeometry(Geometry):
    """`keras.layers.Dense`'s arguments."""

    map_class = DenseMap
    exposed = ("units",)

    def __init__(
        self, units, activation=None, use_bias=True, batch_shape=(), **kwargs
    ):
        super().__init__(**kwargs)
        self._finish(locals())


class EinsumGeometry(Geometry):
    """`keras.layers.EinsumDense`'s arguments.

    The layer has a bias when `bias_axes` is given (there is no
    `use_bias`); `output_shape` is read back as `partial_output_shape`, as
    in Keras.
    """

    map_class = EinsumMap
    exposed = ("equation", "partial_output_shape", "bias_axes")

    def __init__(
        self,
        equation,
        output_shape,
        activation=None,
        bias_axes=None,
        batch_shape=(),
        **kwargs,
    ):
        super().__init__(**kwargs)
        arguments = {
            "equation": equation,
            "output_shape": output_shape,
            "bias_axes": bias_axes,
        }
        self._map = EinsumMap(None, arguments, batch_shape, self.name)
        self.activation = keras.activations.get(activation)
        self.use_bias = bias_axes is not None

    def get_config(self):
        config = super().get_config()
        del config["use_bias"]
        return config
