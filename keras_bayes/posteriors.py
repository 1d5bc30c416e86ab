"""Variational posterior families over a layer's weights.

A family owns the variables of each weight it describes and their
transforms: which variables a weight needs (`<name>_loc` and, for a
mean-field normal, `<name>_untransformed_scale`), how they are initialised,
how they map to a location and a scale, and how to set them from a trained
point estimate (MOPED). Layers declare their weights with a family and a
prior; the base layer makes, draws, scores and saves them. Families are
plain serializable configs.
"""

import collections

import keras
import numpy as np
from keras import ops

from keras_bayes import _registry, _validation
from keras_bayes._export import register

SCALE_FLOOR = 1e-5

Parameters = collections.namedtuple("Parameters", ["name", "loc", "scale"])
Parameters.__doc__ = """One weight's posterior in float32 tensors.

`scale` is None for a point estimate; `name` is the weight's name.
"""


def _initializer(value, name):
    try:
        return keras.initializers.get(value)
    except ValueError:
        raise _validation.invalid(
            name,
            "Expected a Keras initializer, its name or its config.",
            value,
        ) from None


def _serialize_initializers(obj, keys, names):
    return {
        key: keras.initializers.serialize(getattr(obj, name))
        for key, name in zip(keys, names)
    }


class Posterior(_registry.ConfigObject):
    """Base class of the posterior families.

    A family lists its variables as `(suffix, initializer attribute)` in
    `variables`; `stochastic` says whether it has a scale.
    """

    stochastic = False
    variables = ()

    def create(self, layer, name, shape, wrap_initializer=None):
        """Make the variables of weight `name` on `layer`.

        Each variable is `<name>_<suffix>`, float32 whatever the dtype
        policy, and is also set as that attribute of the layer.

        Args:
            layer: the Keras layer that owns the variables.
            name: the weight's name, e.g. `"kernel"`.
            shape: the variables' shape.
            wrap_initializer: a function applied to each initializer (the
                layer's per-member wrapper), or None.

        Returns:
            `{suffix: variable}`.
        """
        created = {}
        for suffix, attribute in self.variables:
            initializer = getattr(self, attribute)
            if wrap_initializer is not None:
                initializer = wrap_initializer(initializer)
            variable = layer.add_weight(
                name=f"{name}_{suffix}",
                shape=shape,
                initializer=initializer,
                autocast=False,
            )
            setattr(layer, f"{name}_{suffix}", variable)
            created[suffix] = variable
        return created

    def parameters(self, name, variables):
        """The weight's `Parameters` from its variables."""
        return Parameters(name, ops.convert_to_tensor(variables["loc"]), None)

    def values(self, loc, scale=None):
        """Variable values (`{suffix: float32 array}`) of the posterior with
        mean `loc` and standard deviation `scale`.

        This is the one way in to a posterior's variables: conversion,
        migration and post-hoc fits all give a location and a scale and
        let the family store them in its own parameterisation.

        Args:
            loc: array-like, the posterior mean.
            scale: array-like of positive standard deviations (broadcast
                to `loc`'s shape), or None for a point estimate.
        """
        if scale is not None:
            raise _validation.invalid(
                "scale",
                f"A `{type(self).__name__}` posterior is a point estimate "
                "and has no scale: use a stochastic family (e.g. "
                "`MeanFieldNormal`) to keep one.",
                _validation.summary(scale),
            )
        return {"loc": np.asarray(loc, "float32")}

    def values_from_point(self, weights, moped_delta):
        """Variable values of a posterior centred on trained `weights`
        (a point estimate keeps them as they are)."""
        return self.values(weights)

    def moments(self, variables):
        """`(loc, scale)` as NumPy float32 arrays; `scale` is None for a
        point estimate."""
        return ops.convert_to_numpy(variables["loc"]), None

    def placeholder(self):
        """This family with every variable initialised to zeros: for
        layers whose values are set right after they are built, so that
        no random numbers are drawn only to be overwritten."""
        return Deterministic("zeros")


@register
class MeanFieldNormal(Posterior):
    """Independent normal per weight: `N(loc, softplus(u) + 1e-5)`.

    Args:
        loc_initializer: initializer of `<name>_loc`. Defaults to
            `RandomNormal(0, 0.1)`.
        untransformed_scale_initializer: initializer of
            `<name>_untransformed_scale` (`u`). Defaults to
            `RandomNormal(-3, 0.1)`, a scale near 0.05.

    Example:

    >>> posterior = kb.posteriors.MeanFieldNormal(
    ...     untransformed_scale_initializer=keras.initializers.Constant(-5.0))
    >>> layer = kb.layers.Conv2DFlipout(8, 3, kernel_posterior=posterior)
    """

    stochastic = True
    variables = (
        ("loc", "loc_initializer"),
        ("untransformed_scale", "untransformed_scale_initializer"),
    )

    def __init__(
        self, loc_initializer=None, untransformed_scale_initializer=None
    ):
        if loc_initializer is None:
            loc_initializer = keras.initializers.RandomNormal(0.0, 0.1)
        if untransformed_scale_initializer is None:
            untransformed_scale_initializer = keras.initializers.RandomNormal(
                -3.0, 0.1
            )
        self.loc_initializer = _initializer(loc_initializer, "loc_initializer")
        self.untransformed_scale_initializer = _initializer(
            untransformed_scale_initializer, "untransformed_scale_initializer"
        )

    def parameters(self, name, variables):
        loc = ops.convert_to_tensor(variables["loc"])
        return Parameters(
            name, loc, self.scale(variables["untransformed_scale"])
        )

    @staticmethod
    def scale(untransformed_scale):
        """The standard deviation: `softplus(untransformed_scale) + 1e-5`."""
        if keras.backend.backend() == "jax":
            # The same function as `max(u, 0) + log1p(exp(-|u|))`, which
            # XLA's CPU code runs in a third of the time of
            # `jax.nn.softplus` (`logaddexp`), gradient included. `max` is
            # written `(u + |u|) / 2` so that the gradient at u = 0 is
            # sigmoid(0) = 1/2 (a `relu` would give 0 there).
            u = ops.convert_to_tensor(untransformed_scale)
            magnitude = ops.abs(u)
            return (
                0.5 * (u + magnitude)
                + ops.log1p(ops.exp(-magnitude))
                + SCALE_FLOOR
            )
        return ops.softplus(untransformed_scale) + SCALE_FLOOR

    @staticmethod
    def inverse_scale(scale):
        """The `untransformed_scale` (NumPy float32) that gives `scale`.

        `log(expm1(scale - 1e-5))`, written to stay finite for tiny and for
        large scales; a scale at or below the `1e-5` floor gets the
        untransformed value of the smallest representable excess.

        Args:
            scale: array-like of standard deviations.
        """
        scale = np.asarray(scale, dtype="float64")
        excess = np.maximum(scale - SCALE_FLOOR, 1e-30)
        return (excess + np.log(-np.expm1(-excess))).astype("float32")

    def values(self, loc, scale=None):
        """`<name>_loc = loc` and the untransformed scale that gives
        `scale`; a scale at or below the `1e-5` floor gets the floor."""
        loc = np.asarray(loc, "float32")
        if scale is None:
            raise _validation.invalid(
                "scale",
                f"A `{type(self).__name__}` posterior needs a standard "
                "deviation for every weight.",
                None,
            )
        scale = np.asarray(scale, "float64")
        if not np.all(np.isfinite(scale)) or np.any(scale < 0):
            raise _validation.invalid(
                "scale",
                "Expected finite, non-negative standard deviations.",
                _validation.summary(scale),
            )
        scale = np.broadcast_to(scale, loc.shape)
        return {"loc": loc, "untransformed_scale": self.inverse_scale(scale)}

    def values_from_point(self, weights, moped_delta):
        """MOPED (Krishnan et al. 2020): loc `w`, scale `moped_delta * |w|`.

        Weights at exactly zero get the smallest representable scale (the
        `1e-5` floor) rather than a degenerate one.
        """
        weights = np.asarray(weights, "float32")
        return self.values(
            weights, moped_delta * np.abs(weights.astype("float64"))
        )

    def moments(self, variables):
        loc = ops.convert_to_numpy(variables["loc"])
        scale = self.scale(variables["untransformed_scale"])
        return loc, ops.convert_to_numpy(scale)

    def placeholder(self):
        return MeanFieldNormal("zeros", "zeros")

    def get_config(self):
        return _serialize_initializers(
            self,
            ("loc_initializer", "untransformed_scale_initializer"),
            ("loc_initializer", "untransformed_scale_initializer"),
        )

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("loc_initializer", "untransformed_scale_initializer"):
            config[key] = keras.initializers.deserialize(config[key])
        return cls(**config)


class _RandomSign(keras.initializers.Initializer):
    """+1 or -1 per entry, -1 with probability `probability`."""

    def __init__(self, probability, seed=None):
        self.probability = probability
        self.seed = seed

    def __call__(self, shape, dtype=None):
        seed = self.seed if self.seed is not None else None
        draws = keras.random.uniform(shape, seed=seed)
        negative = ops.cast(draws < self.probability, dtype or "float32")
        return 1.0 - 2.0 * negative

    def get_config(self):
        return {"probability": self.probability, "seed": self.seed}


@register
class FactorNormal(MeanFieldNormal):
    """A mean-field normal over multiplicative factors, centred on 1.

    The default posterior of the rank-1 layers' `alpha` and `gamma`
    (Dusenberry et al. 2020): variables `<name>_loc` and
    `<name>_untransformed_scale`, as `MeanFieldNormal`.

    Args:
        random_sign_init: 0 (default) starts every loc at `N(1,
            loc_stddev)`; a probability `p` in (0, 1] starts each loc at
            +1 or -1, -1 with probability `p` (the paper's random-sign
            initialisation; `p = 0.5` makes the members of an ensemble
            differ from the start).
        loc_stddev: spread of the initial locs around 1. Defaults to 0.1.
        initial_scale: posterior scale at initialisation. Defaults to
            0.0316, the paper's `sqrt(p / (1 - p))` for a dropout rate
            `p = 1e-3`.

    Example:

    >>> layer = kb.layers.Conv2DRank1(
    ...     8, 3, batch_shape=(4,),
    ...     alpha_posterior=kb.posteriors.FactorNormal(random_sign_init=0.5))
    """

    def __init__(
        self, random_sign_init=0.0, loc_stddev=0.1, initial_scale=0.0316
    ):
        probability = _validation.number(
            random_sign_init, "random_sign_init", lower=0, upper=1
        )
        loc_stddev = _validation.number(loc_stddev, "loc_stddev", lower=0)
        scale = _validation.number(
            initial_scale, "initial_scale", lower=SCALE_FLOOR, strict=True
        )
        self.random_sign_init = probability
        self.loc_stddev = loc_stddev
        self.initial_scale = scale
        if probability > 0:
            loc = _RandomSign(probability)
        else:
            loc = keras.initializers.RandomNormal(1.0, loc_stddev)
        untransformed = float(self.inverse_scale(scale))
        super().__init__(
            loc_initializer=loc,
            untransformed_scale_initializer=keras.initializers.Constant(
                untransformed
            ),
        )

    def get_config(self):
        return {
            "random_sign_init": self.random_sign_init,
            "loc_stddev": self.loc_stddev,
            "initial_scale": self.initial_scale,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@register
class Deterministic(Posterior):
    """A point estimate: the weight is the single variable `<name>_loc`.

    Args:
        initializer: initializer of `<name>_loc`. Defaults to `"zeros"`.
    """

    variables = (("loc", "loc_initializer"),)

    def __init__(self, initializer="zeros"):
        self.loc_initializer = _initializer(initializer, "initializer")

    def get_config(self):
        return _serialize_initializers(
            self, ("initializer",), ("loc_initializer",)
        )

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["initializer"] = keras.initializers.deserialize(
            config["initializer"]
        )
        return cls(**config)


_REGISTRY = _registry.Registry(
    "posterior",
    "keras_bayes.posteriors",
    Posterior,
    {"mean_field_normal": MeanFieldNormal, "deterministic": Deterministic},
)
serialize = _registry.serialize
deserialize = _registry.deserialize
get = _REGISTRY.get
names = _REGISTRY.names
