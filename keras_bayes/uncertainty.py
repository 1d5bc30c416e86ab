"""Monte Carlo prediction and uncertainty measures for Bayesian models.

`mc_predict` runs a model several times with fresh weight draws and returns
every sample. The measures take numpy arrays of class probabilities and
return numpy arrays, in nats:

- `predictive_entropy`: total uncertainty, the entropy of the mean
  predictive distribution;
- `mutual_information`: the epistemic part (BALD, Houlsby et al. 2011), the
  entropy of the mean minus the mean entropy of the samples;
- `expected_calibration_error`: how far confidence is from accuracy
  (Guo et al. 2017), over equal-width confidence bins.
"""

import numbers
import time

import keras
import numpy as np

from keras_bayes import _validation

# With `verbose="auto"`, a run that lasts longer than this (in seconds)
# shows a progress bar over samples.
_AUTO_PROGBAR_AFTER = 1.0
# Probabilities of a row must sum to 1 within this; wide enough for float16
# softmax outputs, narrow enough to catch logits passed by mistake.
_SUM_TOLERANCE = 1e-2


def _array_error(name, expected, received):
    return ValueError(
        f"Invalid value for argument `{name}`. {expected} Received: {received}"
    )


def _probabilities(probs, name, ndims):
    """`probs` as a float64 array of rank in `ndims`, rows of probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim not in ndims or probs.shape[-1] < 2:
        shapes = " or ".join(
            {2: "(N, K)", 3: "(num_samples, N, K)"}[n] for n in ndims
        )
        raise _array_error(
            name,
            f"Expected an array of shape {shapes} with K >= 2 classes.",
            f"{name}.shape={probs.shape}",
        )
    if probs.size and (
        not np.all(np.isfinite(probs))
        or probs.min() < 0
        or np.abs(probs.sum(axis=-1) - 1).max() > _SUM_TOLERANCE
    ):
        raise _array_error(
            name,
            "Expected probabilities: finite, non-negative, summing to 1 over "
            "the last axis (apply a softmax to logits first).",
            f"{name} with values in [{probs.min()}, {probs.max()}] and row "
            f"sums in [{probs.sum(-1).min()}, {probs.sum(-1).max()}]",
        )
    return probs


def _entropy(probs):
    """Entropy over the last axis, with 0 log 0 = 0."""
    logs = np.log(np.where(probs > 0, probs, 1.0))
    return 0.0 - np.sum(probs * logs, axis=-1)  # +0.0, not -0.0, if certain


def predictive_entropy(probs):
    """Entropy of the predictive distribution, in nats.

    Args:
        probs: class probabilities, shape `(N, K)`, or Monte Carlo samples
            of them, shape `(num_samples, N, K)`, which are averaged first.

    Returns:
        A float64 array of shape `(N,)`, between 0 (one class certain) and
        `log(K)` (uniform).

    Example:

    >>> import numpy as np
    >>> predictive_entropy(np.array([[1.0, 0.0], [0.5, 0.5]])).round(4)
    array([0.    , 0.6931])
    """
    probs = _probabilities(probs, "probs", (2, 3))
    if probs.ndim == 3:
        probs = probs.mean(axis=0)
    return _entropy(probs)


def mutual_information(prob_samples):
    """Mutual information between prediction and weights (BALD), in nats.

    `H[mean_s p_s] - mean_s H[p_s]`: the part of the predictive entropy that
    comes from disagreement between weight samples (epistemic uncertainty).
    It is 0 when every sample predicts the same distribution.

    Args:
        prob_samples: Monte Carlo samples of class probabilities, shape
            `(num_samples, N, K)`, e.g. from `mc_predict`.

    Returns:
        A float64 array of shape `(N,)`, between 0 and the predictive
        entropy.

    Example:

    >>> import numpy as np
    >>> samples = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # two samples
    >>> mutual_information(samples).round(4)  # full disagreement: log 2
    array([0.6931])
    """
    samples = _probabilities(prob_samples, "prob_samples", (3,))
    information = _entropy(samples.mean(axis=0)) - _entropy(samples).mean(0)
    # Non-negative by Jensen's inequality; clip rounding noise below 0.
    return np.maximum(information, 0.0)


def _labels(y_true, probs):
    """Integer labels of shape `(N,)` from labels or one-hot rows."""
    y_true = np.asarray(y_true)
    n, k = probs.shape
    if y_true.shape == (n, k):
        return y_true.argmax(axis=-1)
    if y_true.shape in ((n,), (n, 1)):
        labels = y_true.reshape(n)
        if not np.all(np.equal(np.mod(labels, 1), 0)) or (
            labels.size and (labels.min() < 0 or labels.max() >= k)
        ):
            raise _array_error(
                "y_true",
                f"Expected integer class labels in [0, {k}).",
                f"y_true with values in [{labels.min()}, {labels.max()}]",
            )
        return labels.astype(np.int64)
    raise _array_error(
        "y_true",
        f"Expected integer labels of shape ({n},) or one-hot rows of shape "
        f"({n}, {k}), matching `probs`.",
        f"y_true.shape={y_true.shape}",
    )


def expected_calibration_error(y_true, probs, num_bins=15):
    """Expected calibration error of class probabilities.

    The confidence of a prediction is its largest class probability. The
    predictions are grouped into `num_bins` equal-width bins of confidence
    over [0, 1]; the ECE is the mean over bins of |accuracy - mean
    confidence|, weighted by the fraction of predictions in each bin.

    Args:
        y_true: integer class labels, shape `(N,)` or `(N, 1)`, or one-hot
            rows, shape `(N, K)`.
        probs: class probabilities, shape `(N, K)`, or Monte Carlo samples
            of them, shape `(num_samples, N, K)`, which are averaged first.
        num_bins: number of confidence bins. Defaults to 15.

    Returns:
        A float in [0, 1]; 0 for a perfectly calibrated model (and for
        `N = 0`).

    Example:

    >>> import numpy as np
    >>> probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.15, 0.85]])
    >>> # bin 0.9-1: accuracy 1/2, confidence 0.95; bin 0.8-0.9: 1 vs 0.85
    >>> round(expected_calibration_error([0, 1, 1], probs, num_bins=10), 4)
    0.35
    """
    num_bins = _validation.positive_int(num_bins, "num_bins")
    probs = _probabilities(probs, "probs", (2, 3))
    if probs.ndim == 3:
        probs = probs.mean(axis=0)
    labels = _labels(y_true, probs)
    if len(labels) == 0:
        return 0.0
    confidence = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == labels
    bins = np.minimum((confidence * num_bins).astype(np.int64), num_bins - 1)
    count = np.bincount(bins, minlength=num_bins)
    confidence_sum = np.bincount(bins, confidence, minlength=num_bins)
    correct_sum = np.bincount(bins, correct, minlength=num_bins)
    # sum_b (n_b / N) |acc_b - conf_b| = sum_b |correct_b - conf_b| / N
    return float(np.abs(correct_sum - confidence_sum).sum() / count.sum())


def _check_verbose(verbose):
    if verbose == "auto" or (
        isinstance(verbose, numbers.Integral) and verbose in (0, 1, 2)
    ):
        return verbose
    raise _validation.invalid("verbose", 'Expected "auto", 0, 1 or 2.', verbose)


def _is_array_input(x):
    leaves = keras.tree.flatten(x)
    return (
        bool(leaves)
        and all(
            isinstance(leaf, np.ndarray) or keras.ops.is_tensor(leaf)
            for leaf in leaves
        )
        and leaves[0].shape[0] > 0
    )


def _array_pass(model, x, batch_size):
    """One pass over in-memory inputs, batch by batch.

    `predict_on_batch` runs the same compiled step as `predict` without
    building a dataset pipeline on every call: on TensorFlow that set-up
    costs ~0.1 s per pass, more than a small model's whole pass.
    """
    num_examples = keras.tree.flatten(x)[0].shape[0]
    outputs = []
    for start in range(0, num_examples, batch_size):
        batch = keras.tree.map_structure(
            lambda a, start=start: a[start : start + batch_size], x
        )
        outputs.append(model.predict_on_batch(batch))
    return keras.tree.map_structure(
        lambda *parts: np.concatenate(parts, axis=0), *outputs
    )


def mc_predict(model, x, num_samples=30, batch_size=None, verbose="auto"):
    """Monte Carlo predictions: `num_samples` passes with fresh weights.

    Each sample is one pass over `x`, batch by batch as in `model.predict`,
    in which every Bayesian layer in sample mode draws new weights; every
    batch is one call of the model's compiled predict step. In mean mode
    (`kb.set_posterior_value(model, "mean")`) all samples are equal.

    Args:
        model: a `keras.Model`.
        x: inputs: arrays or tensors (or a list or dict of them), or
            anything else `model.predict` accepts (a `tf.data.Dataset`, a
            `keras.utils.PyDataset`), which is then read once per sample
            and must give the same examples in the same order every time
            (no shuffling, no one-shot generator).
        num_samples: number of Monte Carlo samples. Defaults to 30.
        batch_size: examples per batch. Defaults to 32, as `model.predict`.
        verbose: `"auto"` (a progress bar over samples once the run has
            lasted a second), 0 (silent), 1 (progress bar) or 2 (one line
            at the end).

    Returns:
        A numpy array of shape `(num_samples, N, ...)`, where `(N, ...)` is
        the shape `model.predict(x)` returns (the same structure of such
        arrays for a model with several outputs).

    Example:

    ```python
    samples = kb.uncertainty.mc_predict(model, x_test, num_samples=50)
    probs = samples.mean(axis=0)  # the predictive distribution
    entropy = kb.uncertainty.predictive_entropy(samples)
    bald = kb.uncertainty.mutual_information(samples)
    ```
    """
    if not isinstance(model, keras.Model):
        raise _validation.invalid("model", "Expected a `keras.Model`.", model)
    num_samples = _validation.positive_int(num_samples, "num_samples")
    if batch_size is not None:
        batch_size = _validation.positive_int(batch_size, "batch_size")
    verbose = _check_verbose(verbose)
    if _is_array_input(x):

        def one_pass():
            return _array_pass(model, x, batch_size or 32)

    else:

        def one_pass():
            return model.predict(x, batch_size=batch_size, verbose=0)

    samples = None
    progbar = None
    start = time.monotonic()
    for index in range(num_samples):
        outputs = one_pass()
        if samples is None:
            samples = keras.tree.map_structure(
                lambda y: np.empty((num_samples,) + y.shape, y.dtype), outputs
            )
        flat_outputs = keras.tree.flatten(outputs)
        for sample, y in zip(keras.tree.flatten(samples), flat_outputs):
            sample[index] = y
        long_run = time.monotonic() - start > _AUTO_PROGBAR_AFTER
        if progbar is None and verbose != 0 and (verbose != "auto" or long_run):
            progbar = keras.utils.Progbar(
                num_samples,
                verbose=1 if verbose == "auto" else verbose,
                unit_name="sample",
            )
        if progbar is not None:
            progbar.update(index + 1)
    return samples
