"""Which Keras layers `to_bayesian` converts, and into what.

One `Rule` per Keras class: the keras-bayes class stem (`"Conv2D"` becomes
`kb.layers.Conv2DFlipout` or `Conv2DReparameterization`), the constructor
arguments carried over, the kernels (Keras attribute, keras-bayes variable
prefix) and the arguments that a Bayesian layer has no place for.

The Bayesian class is looked up by name on `kb.layers` when a model is
converted, so a rule whose class this version does not have yet makes its
Keras layer unconvertible (and named in the conversion's warning) rather
than failing at import.
"""

import dataclasses

import keras

from keras_bayes import layers as bayesian_layers

ESTIMATORS = {"flipout": "Flipout", "reparameterization": "Reparameterization"}


@dataclasses.dataclass(frozen=True)
class Rule:
    """How one Keras layer class becomes a Bayesian one.

    Args:
        stem: keras-bayes class name without the estimator suffix.
        arguments: config keys passed on to the Bayesian constructor.
        kernels: `(keras attribute, keras-bayes variable prefix)` pairs; the
            prefix gets `_loc` and `_untransformed_scale`.
        unsupported: config keys that are dropped, with a warning, when set.
    """

    stem: str
    arguments: tuple
    kernels: tuple
    unsupported: tuple

    def bayesian_class(self, estimator):
        """The keras-bayes class for `estimator`, or None if it is missing."""
        return getattr(bayesian_layers, self.stem + ESTIMATORS[estimator], None)

    def class_name(self, estimator):
        return self.stem + ESTIMATORS[estimator]


_GEOMETRY = ("kernel_size", "strides", "padding", "data_format")
_CONV = ("filters", *_GEOMETRY, "dilation_rate", "groups")
_CONV_TRANSPOSE = ("filters", *_GEOMETRY, "output_padding", "dilation_rate")
_DEPTHWISE = (*_GEOMETRY, "depth_multiplier", "dilation_rate")
_SEPARABLE = ("filters", *_DEPTHWISE)
_OUTPUT = ("activation", "use_bias")

_KERNEL = (("kernel", "kernel"),)
_KERNEL_UNSUPPORTED = (
    "kernel_regularizer",
    "bias_regularizer",
    "kernel_constraint",
    "bias_constraint",
)
_DEPTHWISE_UNSUPPORTED = (
    "depthwise_regularizer",
    "bias_regularizer",
    "depthwise_constraint",
    "bias_constraint",
)
_SEPARABLE_UNSUPPORTED = (
    *_DEPTHWISE_UNSUPPORTED,
    "pointwise_regularizer",
    "pointwise_constraint",
)


def _rule(stem, arguments, kernels=_KERNEL, unsupported=_KERNEL_UNSUPPORTED):
    return Rule(stem, (*arguments, *_OUTPUT), kernels, unsupported)


RULES = {
    keras.layers.Dense: _rule("Dense", ("units",)),
    keras.layers.Conv1D: _rule("Conv1D", _CONV),
    keras.layers.Conv2D: _rule("Conv2D", _CONV),
    keras.layers.Conv3D: _rule("Conv3D", _CONV),
    keras.layers.Conv1DTranspose: _rule("Conv1DTranspose", _CONV_TRANSPOSE),
    keras.layers.Conv2DTranspose: _rule("Conv2DTranspose", _CONV_TRANSPOSE),
    keras.layers.Conv3DTranspose: _rule("Conv3DTranspose", _CONV_TRANSPOSE),
    # Keras names the depthwise kernel `kernel` in DepthwiseConv layers.
    keras.layers.DepthwiseConv1D: _rule(
        "DepthwiseConv1D", _DEPTHWISE, unsupported=_DEPTHWISE_UNSUPPORTED
    ),
    keras.layers.DepthwiseConv2D: _rule(
        "DepthwiseConv2D", _DEPTHWISE, unsupported=_DEPTHWISE_UNSUPPORTED
    ),
    keras.layers.SeparableConv1D: _rule(
        "SeparableConv1D",
        _SEPARABLE,
        kernels=(
            ("depthwise_kernel", "depthwise_kernel"),
            ("pointwise_kernel", "pointwise_kernel"),
        ),
        unsupported=_SEPARABLE_UNSUPPORTED,
    ),
    keras.layers.SeparableConv2D: _rule(
        "SeparableConv2D",
        _SEPARABLE,
        kernels=(
            ("depthwise_kernel", "depthwise_kernel"),
            ("pointwise_kernel", "pointwise_kernel"),
        ),
        unsupported=_SEPARABLE_UNSUPPORTED,
    ),
}

CLASS_NAMES = sorted(cls.__name__ for cls in RULES)


def kind_of(layer):
    """The `RULES` class that `layer` is an instance of, or None.

    A subclass of a Keras layer counts (it holds the same kernels), but
    only the exact class is converted: a subclass may compute something
    else, which its Bayesian counterpart would not reproduce.
    """
    for cls in type(layer).__mro__:
        if cls in RULES:
            return cls
    return None


def holds_weights(layer):
    return bool(layer.weights)
