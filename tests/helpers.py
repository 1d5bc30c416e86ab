"""Small helpers shared by the test files."""

import numpy as np
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
