"""The estimators: how a layer turns a weight posterior into outputs.

An estimator maps `(linear map, inputs, posterior parameters, draws)` to
outputs in sample mode; in mean mode every estimator is the map at the
posterior mean, `f(inputs, loc)`, and draws nothing. Estimators never see
member axes: the map owns them (`modulate` applies per-example, per-member
channel factors such as Flipout's signs).

- reparameterization: one kernel draw `W = loc + scale * eps` per call,
  shared by the whole batch (Kingma & Welling 2014);
- flipout: `f(x, loc) + f(x * s_in, scale * eps) * s_out` with Rademacher
  signs per example and channel (Wen et al. 2018);
- local_reparameterization: `N(f(x, loc), f(x**2, scale**2))` drawn per
  example and output (Kingma et al. 2015).
"""

import keras
from keras import ops

from keras_bayes import _validation


class Draws:
    """The random numbers of one sampling call.

    Every draw of a call comes from here: the weights' noise (kept, so
    that a Monte Carlo KL scores the draw the outputs used) and the
    per-example signs and noise of Flipout, local reparameterization and
    the rank-1 factors.

    Args:
        seed: the layer's `keras.random.SeedGenerator`, or (JAX) one seed
            drawn from it for the whole call, split here: inside a traced
            branch or a custom derivative no generator state may change.
    """

    def __init__(self, seed):
        self._noise = {}
        if isinstance(seed, keras.random.SeedGenerator):
            self._generator = seed
            self._key = None
        else:
            self._generator = None
            self._key = seed

    def seed(self):
        """A seed for one `keras.random` call."""
        if self._generator is not None:
            return self._generator
        keys = keras.random.randint(
            (2, 2), 0, 2**31 - 1, dtype="int32", seed=self._key
        )
        keys = ops.cast(keys, self._key.dtype)
        self._key = keys[0]
        return keys[1]

    def normal(self, shape):
        """Standard normal draws of `shape` (float32)."""
        return keras.random.normal(shape, seed=self.seed())

    def noise(self, params):
        """Standard normal noise of a weight's shape (float32), the same
        tensor every time it is asked for in this call."""
        if params.name not in self._noise:
            self._noise[params.name] = self.normal(params.loc.shape)
        return self._noise[params.name]

    def weights(self, params):
        """A posterior draw of a weight: `loc + scale * eps`."""
        if params.scale is None:
            return params.loc
        return params.loc + params.scale * self.noise(params)

    def rademacher(self, shape, dtype):
        bits = keras.random.randint(
            shape, 0, 2, dtype="int32", seed=self.seed()
        )
        return ops.cast(bits, dtype) * 2 - 1


def _variance_floor(dtype):
    # Keeps sqrt differentiable where an input row is all zeros; far below
    # any variance that matters, but representable in half precision.
    half = keras.backend.standardize_dtype(dtype) in ("float16", "bfloat16")
    return 1e-6 if half else 1e-12


def reparameterization(linear_map, inputs, params, draws):
    kernel = draws.weights(params)
    return linear_map(inputs, ops.cast(kernel, inputs.dtype))


def flipout(linear_map, inputs, params, draws):
    dtype = inputs.dtype
    delta = params.scale * draws.noise(params)
    in_shape, out_shape = linear_map.factor_shapes(inputs)
    sign_in = draws.rademacher(in_shape, dtype)
    sign_out = draws.rademacher(out_shape, dtype)
    mean = linear_map(inputs, ops.cast(params.loc, dtype))
    perturbation = linear_map.modulate(
        inputs, ops.cast(delta, dtype), sign_in, sign_out
    )
    return mean + perturbation


def local_reparameterization(linear_map, inputs, params, draws):
    dtype = inputs.dtype
    mean = linear_map(inputs, ops.cast(params.loc, dtype))
    variance = linear_map(
        ops.square(inputs), ops.cast(ops.square(params.scale), dtype)
    )
    noise = keras.random.normal(ops.shape(mean), dtype=dtype, seed=draws.seed())
    return mean + ops.sqrt(variance + _variance_floor(dtype)) * noise


ESTIMATORS = {
    "reparameterization": reparameterization,
    "flipout": flipout,
    "local_reparameterization": local_reparameterization,
}


def get(name):
    """The estimator called `name`; an unknown name is a `ValueError`."""
    if not isinstance(name, str) or name not in ESTIMATORS:
        raise _validation.invalid(
            "estimator", f"Expected one of {sorted(ESTIMATORS)}.", name
        )
    return ESTIMATORS[name]


def apply(estimator, linear_map, inputs, params, draws):
    """The estimator in sample mode (`draws`), the mean in mean mode (None).

    A point estimate (no scale) is its mean in both modes.
    """
    if draws is None or params.scale is None:
        return linear_map(inputs, ops.cast(params.loc, inputs.dtype))
    return estimator(linear_map, inputs, params, draws)
