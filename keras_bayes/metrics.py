"""Keras metrics for Bayesian models."""

import keras
from keras import ops

from keras_bayes import _validation
from keras_bayes._export import register


@register
class ExpectedCalibrationError(keras.metrics.Metric):
    """Expected calibration error (ECE) of class probabilities.

    A stateful metric: each confidence bin keeps its count, the sum of its
    confidences and the number of its correct predictions in variables, so
    the result over several batches equals
    `kb.uncertainty.expected_calibration_error` on all of them at once.
    The confidence of a prediction is its largest class probability; bins
    are `num_bins` equal-width intervals of [0, 1]. Lower is better.

    Args:
        num_bins: number of confidence bins. Defaults to 15.
        name: name of the metric instance.
        dtype: dtype of the state and the result. Defaults to float32.

    Call arguments (`update_state`):
        y_true: integer class labels, shape `(N,)` or `(N, 1)`, or one-hot
            rows, shape `(N, K)`.
        y_pred: class probabilities, shape `(N, K)`.
        sample_weight: optional weights of shape `(N,)`; an integer weight
            counts an example that many times.

    Example:

    ```python
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy", kb.metrics.ExpectedCalibrationError()],
    )
    ```
    """

    def __init__(
        self, num_bins=15, name="expected_calibration_error", dtype=None
    ):
        super().__init__(name=name, dtype=dtype or "float32")
        self.num_bins = _validation.positive_int(num_bins, "num_bins")
        # Read by callbacks such as `EarlyStopping(mode="auto")`.
        self._direction = "down"
        self.count = self.add_variable(
            (self.num_bins,), "zeros", dtype=self.dtype, name="count"
        )
        self.confidence_sum = self.add_variable(
            (self.num_bins,), "zeros", dtype=self.dtype, name="confidence_sum"
        )
        self.correct_sum = self.add_variable(
            (self.num_bins,), "zeros", dtype=self.dtype, name="correct_sum"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.convert_to_tensor(y_true)
        num_classes = y_pred.shape[-1]
        if len(y_pred.shape) != 2:
            raise ValueError(
                "Invalid value for argument `y_pred`. Expected class "
                "probabilities of shape (N, K). "
                f"Received: y_pred.shape={y_pred.shape}"
            )
        y_pred = ops.cast(y_pred, self.dtype)
        if len(y_true.shape) == 2 and y_true.shape[-1] == num_classes != 1:
            labels = ops.argmax(y_true, axis=-1)
        else:
            labels = ops.reshape(y_true, (-1,))
        labels = ops.cast(labels, "int32")
        confidence = ops.max(y_pred, axis=-1)
        correct = ops.cast(
            ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), labels),
            self.dtype,
        )
        bins = ops.minimum(
            ops.cast(ops.floor(confidence * self.num_bins), "int32"),
            self.num_bins - 1,
        )
        # (N, num_bins) membership: cheap for the few bins used, and the same
        # jit-compatible ops on every backend.
        membership = ops.one_hot(bins, self.num_bins, dtype=self.dtype)
        if sample_weight is not None:
            weight = ops.reshape(ops.cast(sample_weight, self.dtype), (-1, 1))
            membership = membership * weight
        self.count.assign_add(ops.sum(membership, axis=0))
        self.confidence_sum.assign_add(
            ops.matmul(confidence[None, :], membership)[0]
        )
        self.correct_sum.assign_add(ops.matmul(correct[None, :], membership)[0])

    def result(self):
        gap = ops.sum(ops.abs(self.correct_sum - self.confidence_sum))
        total = ops.sum(self.count)
        return ops.where(total > 0, gap / ops.maximum(total, 1e-12), 0.0)

    def get_config(self):
        return {
            "num_bins": self.num_bins,
            "name": self.name,
            "dtype": self.dtype,
        }
