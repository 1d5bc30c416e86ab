"""Temperature scaling: post-hoc calibration of a trained classifier.

Temperature scaling (Guo et al. 2017) divides a classifier's logits by one
positive number `T`, fitted on held-out data by minimising the negative
log-likelihood (NLL). `T > 1` softens over-confident predictions, `T < 1`
sharpens under-confident ones. The predicted class never changes (the
order of the logits is kept), so accuracy is unchanged; only the
confidence moves.

- `TemperatureScaling`: a Keras layer holding `T`, fitted with
  `.fit(logits_val, y_val)`, placed after a model's logits and saved with
  the model in `.keras` files.
- `fit_temperature(logits, y)`: the fitted `T` as a float.
- `logits_from_probabilities(probs)`: log-probabilities, usable as logits
  for a model that ends in a softmax.

The fit. With `beta = 1 / T`, the NLL
`mean_i [logsumexp(beta * z_i) - beta * z_i[y_i]]` is convex in `beta`
(a log-sum-exp of linear functions minus a linear function), hence
unimodal in `log T`. `fit_temperature` minimises it over `log T` in
`[log T_min, log T_max]` by golden-section search, in float64 NumPy:
deterministic, derivative-free, and certain to find the minimum of a
unimodal function within the bracket. When the NLL keeps decreasing past a
bound (for example: every validation example is classified correctly, so
`T -> 0` is optimal) the bound is returned, with a warning.
"""

import math
import warnings

import keras
import numpy as np
from keras import ops

from keras_bayes import _arrays, _validation
from keras_bayes._export import register

# Golden-section steps: the bracket shrinks by 0.618 per step, so 80 steps
# take the default bracket (width log(1e4) = 9.2 in log T) below 1e-15.
_GOLDEN_STEPS = 80
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0
_OUTPUTS = ("logits", "probabilities")


def _nll(logits, labels, log_temperature):
    """Mean NLL of `softmax(logits / exp(log_temperature))`, float64."""
    scaled = logits * math.exp(-log_temperature)
    top = scaled.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(scaled - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(log_norm - scaled[np.arange(len(labels)), labels]))


def _bounds(bounds):
    expected = "Expected a pair (low, high) with 0 < low < high, finite."
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise _validation.invalid("bounds", expected, bounds) from None
    if not (0 < low < high < math.inf):
        raise _validation.invalid("bounds", expected, bounds)
    return low, high


def fit_temperature(logits, y, bounds=(1e-2, 1e2)):
    """The temperature that minimises the NLL of `softmax(logits / T)`.

    Golden-section search over `log T` (see the module docstring: the NLL
    is unimodal in `log T`, so the search finds its minimum in `bounds`).

    Args:
        logits: validation logits, shape `(N, K)` (NumPy array or backend
            tensor). For a model that outputs probabilities, pass
            `logits_from_probabilities(probs)`.
        y: integer labels, shape `(N,)` or `(N, 1)`, or one-hot rows.
        bounds: `(T_min, T_max)`, the bracket searched.

    Returns:
        A float in `bounds`.

    Example:

    >>> import numpy as np
    >>> logits = np.array([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    >>> t = fit_temperature(logits, [0, 1, 1])  # one of three wrong
    >>> bool(t > 1)  # over-confident: softened
    True
    """
    logits = _arrays.matrix(logits, "logits", "logits")
    labels = _arrays.labels(y, *logits.shape, "y")
    low, high = _bounds(bounds)
    if len(labels) == 0:
        raise _arrays.error(
            "logits",
            "Expected at least one example.",
            f"logits.shape={logits.shape}",
        )
    a, b = math.log(low), math.log(high)
    c = b - _INV_PHI * (b - a)
    d = a + _INV_PHI * (b - a)
    fc, fd = _nll(logits, labels, c), _nll(logits, labels, d)
    for _ in range(_GOLDEN_STEPS):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _INV_PHI * (b - a)
            fc = _nll(logits, labels, c)
        else:
            a, c, fc = c, d, fd
            d = a + _INV_PHI * (b - a)
            fd = _nll(logits, labels, d)
    # The bounds are candidates too: the minimum may sit on one of them.
    candidates = (low, high, math.exp((a + b) / 2))
    best = min(candidates, key=lambda t: _nll(logits, labels, math.log(t)))
    if best == low:
        warnings.warn(
            f"The validation NLL is lowest at the lower bound T={low:g} of "
            "`bounds`. When every validation example is classified "
            "correctly with a margin, the NLL keeps falling as T -> 0 and "
            "the fitted temperature over-sharpens unseen data; use more "
            "validation data (with some errors) or a larger lower bound.",
            stacklevel=2,
        )
    elif best == high:
        warnings.warn(
            f"The validation NLL is lowest at the upper bound T={high:g} of "
            "`bounds`: the logits carry next to no information about the "
            "labels (predictions near uniform fit best).",
            stacklevel=2,
        )
    return float(best)


def logits_from_probabilities(probs, epsilon=1e-12):
    """Log-probabilities, to use as logits for temperature scaling.

    `softmax(log(p) / T)` is `p ** (1 / T)` renormalised, so a model that
    ends in a softmax can be calibrated from its probabilities. Entries
    below `epsilon` are raised to it before the log.

    Args:
        probs: class probabilities, shape `(N, K)`.
        epsilon: the smallest probability kept, in (0, 1).

    Returns:
        A float64 NumPy array of shape `(N, K)`.
    """
    epsilon = _validation.number(epsilon, "epsilon", lower=0, strict=True)
    probs = _arrays.probabilities(probs, "probs")
    return np.log(np.maximum(probs, epsilon))


@register
class TemperatureScaling(keras.layers.Layer):
    """Divides logits by a fitted positive temperature.

    The temperature `T` is stored as its logarithm (a non-trainable scalar
    variable `log_temperature`), so it stays positive whatever value is
    assigned. Fit it on held-out data with `.fit(logits_val, y_val)`
    (golden-section search on the validation NLL; see
    `fit_temperature`), then place the layer after the model's logits.
    `fit` changes nothing but `T`, and `T` is saved in `.keras` files.

    Args:
        temperature: the initial temperature, a finite number > 0.
            Defaults to 1 (no change).
        output_mode: `"logits"` (default) returns `logits / T`;
            `"probabilities"` returns `softmax(logits / T)`.
        **kwargs: base layer arguments (`name`, `dtype`).

    Input shape:
        `(..., K)` logits.

    Output shape:
        The input shape.

    Example:

    ```python
    logits_val = model.predict(x_val)  # a model that outputs logits
    scaling = kb.calibration.TemperatureScaling().fit(logits_val, y_val)
    calibrated = keras.Sequential(
        [model, scaling, keras.layers.Softmax()]
    )
    ```
    """

    def __init__(self, temperature=1.0, output_mode="logits", **kwargs):
        super().__init__(**kwargs)
        temperature = _validation.number(
            temperature, "temperature", lower=0, strict=True
        )
        if (
            not isinstance(output_mode, str)
            or output_mode.lower() not in _OUTPUTS
        ):
            raise _validation.invalid(
                "output_mode",
                'Expected "logits" or "probabilities".',
                output_mode,
            )
        self.output_mode = output_mode.lower()
        self.log_temperature = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(math.log(temperature)),
            trainable=False,
            name="log_temperature",
        )
        self.built = True

    @property
    def temperature(self):
        """The current temperature, a Python float."""
        value = ops.convert_to_numpy(self.log_temperature.value)
        return float(np.exp(np.asarray(value, dtype=np.float64)))

    def set_temperature(self, temperature):
        """Sets `T` (a finite number > 0)."""
        temperature = _validation.number(
            temperature, "temperature", lower=0, strict=True
        )
        self.log_temperature.assign(math.log(temperature))
        return self

    def fit(self, logits, y, bounds=(1e-2, 1e2)):
        """Fits `T` to `(logits, y)` by minimising the NLL.

        Args:
            logits: validation logits, shape `(N, K)`.
            y: integer labels, shape `(N,)` or `(N, 1)`, or one-hot rows.
            bounds: `(T_min, T_max)`, the bracket searched.

        Returns:
            The layer itself.
        """
        return self.set_temperature(fit_temperature(logits, y, bounds))

    def call(self, inputs):
        inverse = ops.exp(-ops.cast(self.log_temperature, inputs.dtype))
        scaled = inputs * inverse
        if self.output_mode == "probabilities":
            return ops.softmax(scaled, axis=-1)
        return scaled

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {"temperature": self.temperature, "output_mode": self.output_mode}
        )
        return config
