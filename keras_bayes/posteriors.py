"""Variational posteriors over a layer's weights.

A posterior says which variables a weight needs and how they map to a
distribution. Layers own the variables (`<name>_loc` and, for a mean-field
normal, `<name>_untransformed_scale`); posteriors hold the initializers and
the transform, and serialize as plain configs.
"""

import keras
import numpy as np
from keras import ops

from keras_bayes import _validation
from keras_bayes._export import register

SCALE_FLOOR = 1e-5


def _initializer(value, name):
    try:
        return keras.initializers.get(value)
    except ValueError:
        raise _validation.invalid(
            name,
            "Expected a Keras initializer, its name or its config.",
            value,
        ) from None


class Posterior:
    """Base class of the weight posteriors."""

    stochastic = False

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


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

    @staticmethod
    def scale(untransformed_scale):
        """The standard deviation: `softplus(untransformed_scale) + 1e-5`."""
        if keras.backend.backend() == "jax":
            # The same function as `max(u, 0) + log1p(exp(-|u|))`, which
            # XLA's CPU code runs in a third of the time of
            # `jax.nn.softplus` (`logaddexp`), gradient included. `max` is
            # written `(u + |u|) / 2` so that the gradient at u = 0 is
            # sigmoid(0) = 1/2 (a `relu` would give 0 there).
            u = untransformed_scale
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

    def get_config(self):
        return {
            "loc_initializer": keras.initializers.serialize(
                self.loc_initializer
            ),
            "untransformed_scale_initializer": keras.initializers.serialize(
                self.untransformed_scale_initializer
            ),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("loc_initializer", "untransformed_scale_initializer"):
            config[key] = keras.initializers.deserialize(config[key])
        return cls(**config)


@register
class Deterministic(Posterior):
    """A point estimate: the weight is the single variable `<name>_loc`.

    Args:
        initializer: initializer of `<name>_loc`. Defaults to `"zeros"`.
    """

    def __init__(self, initializer="zeros"):
        self.loc_initializer = _initializer(initializer, "initializer")

    def get_config(self):
        return {
            "initializer": keras.initializers.serialize(self.loc_initializer)
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["initializer"] = keras.initializers.deserialize(
            config["initializer"]
        )
        return cls(**config)


_NAMES = {
    "mean_field_normal": MeanFieldNormal,
    "deterministic": Deterministic,
}


def serialize(posterior):
    return keras.saving.serialize_keras_object(posterior)


def deserialize(config):
    return keras.saving.deserialize_keras_object(config)


def get(identifier):
    """Resolve a posterior from an object, a name or a serialized config.

    Names: `"mean_field_normal"`, `"deterministic"`. A new object is returned
    for names and configs; objects are returned as they are.
    """
    if isinstance(identifier, Posterior):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in _NAMES:
            return _NAMES[key]()
    raise ValueError(
        f"Unknown posterior: {identifier!r}. Expected a "
        "`keras_bayes.posteriors` object or one of the names "
        f"{sorted(_NAMES)}."
    )


def names():
    return sorted(_NAMES)
