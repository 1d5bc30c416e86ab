"""Checks of the NumPy arrays that post-hoc methods take: logits,
probabilities and class labels, with Keras-style messages."""

import keras
import numpy as np

# Probabilities of a row must sum to 1 within this (as in `kb.uncertainty`).
SUM_TOLERANCE = 1e-2


def error(name, expected, received):
    return ValueError(
        f"Invalid value for argument `{name}`. {expected} Received: {received}"
    )


def to_numpy(value):
    """A NumPy array from a NumPy array, a backend tensor or a list."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return np.asarray(keras.ops.convert_to_numpy(value))
    return np.asarray(value)


def matrix(value, name, what):
    """`value` as a finite float64 array of shape `(N, K)`, `K >= 2`."""
    array = np.asarray(to_numpy(value), dtype=np.float64)
    if array.ndim != 2 or array.shape[-1] < 2:
        raise error(
            name,
            f"Expected {what} of shape (N, K) with K >= 2 classes.",
            f"{name}.shape={array.shape}",
        )
    if not np.all(np.isfinite(array)):
        raise error(
            name,
            f"Expected finite {what}.",
            f"{name} with {int(np.sum(~np.isfinite(array)))} non-finite values",
        )
    return array


def probabilities(value, name):
    """`value` as float64 class probabilities of shape `(N, K)`."""
    probs = matrix(value, name, "class probabilities")
    if probs.size and (
        probs.min() < 0 or np.abs(probs.sum(axis=-1) - 1).max() > SUM_TOLERANCE
    ):
        raise error(
            name,
            "Expected probabilities: non-negative, each row summing to 1 "
            f"within {SUM_TOLERANCE:g} (apply a softmax to logits first).",
            f"{name} with values in [{probs.min():.4g}, {probs.max():.4g}] "
            f"and row sums in [{probs.sum(-1).min():.4g}, "
            f"{probs.sum(-1).max():.4g}]",
        )
    return probs


def labels(value, num_examples, num_classes, name):
    """Integer class labels of shape `(N,)` from labels of shape `(N,)` or
    `(N, 1)`, or from one-hot rows of shape `(N, K)`."""
    y = to_numpy(value)
    n, k = num_examples, num_classes
    if y.shape == (n, k) and k > 1:
        return y.argmax(axis=-1).astype(np.int64)
    if y.shape not in ((n,), (n, 1)):
        raise error(
            name,
            f"Expected integer labels of shape ({n},) or one-hot rows of "
            f"shape ({n}, {k}), one per row of the predictions.",
            f"{name}.shape={y.shape}",
        )
    y = y.reshape(n)
    if y.size and (
        y.dtype == bool
        or not np.all(np.isfinite(y.astype(np.float64)))
        or not np.all(np.mod(y, 1) == 0)
        or y.min() < 0
        or y.max() >= k
    ):
        raise error(
            name,
            f"Expected integer class labels in [0, {k}).",
            f"{name} with values in [{y.min()}, {y.max()}]",
        )
    return y.astype(np.int64)
