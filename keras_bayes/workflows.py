"""Model-level switches for the Bayesian layers."""

from keras_bayes import _validation
from keras_bayes.layers.variational import VariationalLayer


def is_bayesian(layer):
    """Whether `layer` itself holds weight posteriors (a keras-bayes
    variational layer: convolution, dense, depthwise, separable, rank-1).

    A model or block that merely contains such layers is not Bayesian
    itself: `bayesian_layers` finds those.
    """
    return isinstance(layer, VariationalLayer)


def bayesian_layers(model_or_layer):
    """Every Bayesian layer (`is_bayesian`) in a layer or model, nested
    ones included."""
    # `_flatten_layers` is the one walk Keras offers that reaches layers
    # nested inside custom layers as well as inside sub-models.
    return [
        layer
        for layer in model_or_layer._flatten_layers(include_self=True)
        if is_bayesian(layer)
    ]


def set_posterior_value(model_or_layer, value):
    """Switch every Bayesian layer to `"mean"` or `"sample"`.

    The mode lives in a variable of each layer, so the switch takes effect
    in `predict`, `evaluate` and `fit` functions that were already compiled.

    Args:
        model_or_layer: a Keras model or layer.
        value: `"mean"` (use the posterior mean) or `"sample"` (draw).

    Returns:
        The number of Bayesian layers switched.
    """
    value = _validation.posterior_value(value)
    layers = bayesian_layers(model_or_layer)
    for layer in layers:
        layer.posterior_value = value
    return len(layers)
