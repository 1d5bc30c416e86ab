"""Shared checks of `kb.to_bayesian`'s results, computed from the original.

The reference for every check is the original Keras model: its outputs,
its kernels (the posterior locations), `moped_delta * |kernel|` (the
posterior scales, through NumPy's softplus) and its other weights.
"""

import warnings

import keras
import numpy as np
from keras import ops

import keras_bayes as kb

# Keras kernel attribute -> keras-bayes variable prefix, per layer family.
KERNELS = {
    "DepthwiseConv1D": (("kernel", "kernel"),),
    "DepthwiseConv2D": (("kernel", "kernel"),),
    "SeparableConv1D": (
        ("depthwise_kernel", "depthwise_kernel"),
        ("pointwise_kernel", "pointwise_kernel"),
    ),
    "SeparableConv2D": (
        ("depthwise_kernel", "depthwise_kernel"),
        ("pointwise_kernel", "pointwise_kernel"),
    ),
}


def numpy(x):
    if isinstance(x, keras.Variable):
        x = x.value
    return np.asarray(ops.convert_to_numpy(x))


def softplus(x):
    return np.logaddexp(0.0, x.astype("float64"))


def perturb(model, seed=1):
    """Move every weight off its initial value (kernels stay as they are).

    A bias, batch-norm statistic or layer scale still at its initializer's
    constant would look copied even if it were not; kernels are already
    random. Variances stay positive.
    """
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "kernel" in variable.name or not variable.dtype.startswith("float"):
            continue
        value = numpy(variable).astype("float64")
        noise = rng.normal(size=value.shape)
        if "variance" in variable.name:
            value = value * rng.uniform(0.5, 1.5, size=value.shape)
        else:
            value = value * (1 + 0.1 * noise) + 0.01 * noise
        variable.assign(value.astype(variable.dtype))


def max_difference(a, b):
    return float(np.max(np.abs(numpy(a) - numpy(b))))


def assert_mean_mode_equal(original, converted, x, rtol=1e-5):
    """Mean mode computes what the original does; returns max |diff|."""
    kb.set_posterior_value(converted, "mean")
    expected = numpy(original(x))
    got = numpy(converted(x))
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale)
    return max_difference(got, expected)


def assert_moped(original, converted, moped_delta):
    """Posterior locations = trained kernels, scales = delta * |kernel|."""
    originals = {layer.name: layer for layer in original._flatten_layers()}
    bayesian = kb.workflows.bayesian_layers(converted)
    assert bayesian
    for layer in bayesian:
        source = originals[layer.name]
        kernels = KERNELS.get(type(source).__name__, (("kernel", "kernel"),))
        for attribute, prefix in kernels:
            kernel = numpy(getattr(source, attribute))
            loc = numpy(getattr(layer, f"{prefix}_loc"))
            np.testing.assert_array_equal(loc, kernel)
            untransformed = numpy(
                getattr(layer, f"{prefix}_untransformed_scale")
            )
            scale = softplus(untransformed) + 1e-5
            np.testing.assert_allclose(
                scale, moped_delta * np.abs(kernel), rtol=1e-4, atol=2e-5
            )
        if source.use_bias:
            np.testing.assert_array_equal(
                numpy(layer.bias_loc), numpy(source.bias)
            )
    return bayesian


def convert_with_warnings(model, **kwargs):
    """`kb.to_bayesian(model, **kwargs)` and the messages of the
    `UserWarning`s it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = kb.to_bayesian(model, **kwargs)
    messages = [
        str(w.message)
        for w in caught
        if issubclass(w.category, UserWarning)
        and str(w.message).startswith("to_bayesian")
    ]
    return converted, messages
