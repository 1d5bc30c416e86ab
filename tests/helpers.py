"""Small helpers shared by the test files."""

import numpy as np
import pytest
from keras import ops

from tests import references


def to_numpy(x):
    """A tensor, a variable or an array, as a NumPy array."""
    return np.asarray(ops.convert_to_numpy(x))


def normal_inputs(shape, seed=0):
    """Standard normal float32 values of the given shape."""
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def assign_posterior(layer, seed=1, loc_std=1.0, scale_range=(0.5, 1.5)):
    """Give a Bayesian layer's posterior distinctive values.

    Locations are `N(0, loc_std)` (a zero bias would hide a missing bias
    add); untransformed scales are uniform in `scale_range`. The defaults
    give scales of about 1-1.7: a draw leaking into mean mode would move
    outputs by O(1).

    Returns:
        The float32 values assigned, by variable name.
    """
    rng = np.random.default_rng(seed)
    values = {}
    for variable in layer.trainable_weights:
        shape = tuple(variable.shape)
        if variable.name.endswith("untransformed_scale"):
            value = rng.uniform(*scale_range, size=shape)
        else:
            value = rng.normal(0.0, loc_std, size=shape)
        values[variable.name] = value.astype("float32")
        variable.assign(values[variable.name])
    return values


def randomize_rank1(layer, seed=1):
    """Distinctive values for a rank-1 layer: factor locs `N(1, 0.5)`
    (away from 1), untransformed scales uniform in (-1.5, 0) (scales about
    0.2-0.7), the kernel and bias `N(0, 1)`."""
    rng = np.random.default_rng(seed)
    for variable in layer.trainable_weights:
        shape = tuple(variable.shape)
        if variable.name.endswith("untransformed_scale"):
            value = rng.uniform(-1.5, 0.0, size=shape)
        elif variable.name.endswith("_loc"):
            value = rng.normal(1.0, 0.5, size=shape)
        else:
            value = rng.normal(size=shape)
        variable.assign(value.astype("float32"))


def example_correlation(outputs, mean, first=0, second=1):
    """Per output element, the sample correlation across calls (axis 0 of
    `outputs`, `(calls, examples, ...)`) of two examples' deviations from
    their exact means `mean` (`(examples, ...)`)."""
    calls = outputs.shape[0]
    a = (outputs[:, first] - mean[first]).reshape(calls, -1)
    b = (outputs[:, second] - mean[second]).reshape(calls, -1)
    return np.sum(a * b, axis=0) / np.sqrt(
        np.sum(a**2, axis=0) * np.sum(b**2, axis=0)
    )


def layer_kl(layer):
    """The unweighted KL of a Bayesian layer whose priors are all `Normal`.

    The closed form (`references.normal_kl`), in float64, from the layer's
    posterior variables; a weight without a prior adds nothing.
    """
    kl = 0.0
    for weight in ("kernel", "bias"):
        prior = getattr(layer, f"{weight}_prior")
        if prior is None:
            continue
        loc = to_numpy(getattr(layer, f"{weight}_loc"))
        untransformed = to_numpy(
            getattr(layer, f"{weight}_untransformed_scale")
        )
        kl += references.normal_kl(
            loc,
            references.posterior_scale(untransformed),
            prior.loc,
            prior.scale,
        )
    return kl


# Tolerances of the sample-moment checks: 5 standard errors (a false alarm
# once in about 3.5 million elements), plus float32 round-off.
MOMENT_Z = 5.0
MOMENT_ATOL = 1e-4


def assert_sample_moments(outputs, mean, variance, normal):
    """Per element, the mean and variance of `outputs` (independent calls
    along axis 0) against the exact `mean` and `variance`.

    The sample mean's standard error is `sqrt(variance / n)`. The sample
    variance's is `variance * sqrt(2 / (n - 1))` for normal outputs, and
    otherwise `sqrt((m4 - variance**2) / n)` with the fourth central moment
    `m4` estimated from the draws (a product of normals is not normal).
    """
    n = outputs.shape[0]
    np.testing.assert_array_less(
        np.abs(outputs.mean(axis=0) - mean),
        MOMENT_Z * np.sqrt(variance / n) + MOMENT_ATOL,
    )
    if normal:
        error = variance * np.sqrt(2.0 / (n - 1))
    else:
        fourth = np.mean((outputs - mean) ** 4, axis=0)
        error = np.sqrt(np.maximum(fourth - variance**2, 0.0) / n)
    np.testing.assert_array_less(
        np.abs(outputs.var(axis=0, ddof=1) - variance),
        MOMENT_Z * error + MOMENT_ATOL,
    )


def assert_value_error(function, message):
    """`function()` raises a ValueError whose text is exactly `message`."""
    with pytest.raises(ValueError) as info:
        function()
    assert str(info.value) == message
