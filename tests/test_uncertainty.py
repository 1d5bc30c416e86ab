"""`kb.uncertainty` and `kb.metrics`: values against independent references.

References are hand-computed small cases, `scipy.stats.entropy`, a bin-by-bin
numpy loop for the ECE, and synthetic data whose calibration is known by
construction.
"""

import re

import keras
import numpy as np
import pytest
from scipy import stats

import keras_bayes as kb
from keras_bayes.uncertainty import (
    expected_calibration_error,
    mc_predict,
    mutual_information,
    predictive_entropy,
)
from tests.backend_marks import only_on
from tests.helpers import normal_inputs, to_numpy

LOG2, LOG3 = np.log(2.0), np.log(3.0)


def _dirichlet(shape, num_classes, seed, concentration=0.5):
    rng = np.random.default_rng(seed)
    alpha = np.full(num_classes, concentration)
    return rng.dirichlet(alpha, size=shape)


def _reference_ece(labels, probs, num_bins):
    """ECE from explicit bin edges, one bin at a time."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    total = 0.0
    for b in range(num_bins):
        low, high = b / num_bins, (b + 1) / num_bins
        in_bin = (confidence >= low) & (
            (confidence < high) if b < num_bins - 1 else (confidence <= high)
        )
        if in_bin.any():
            gap = abs(correct[in_bin].mean() - confidence[in_bin].mean())
            total += in_bin.mean() * gap
    return total


def _binary_probs(confidence, predicted):
    """Two-class rows whose largest probability `confidence` is at class
    `predicted`."""
    probs = np.empty((len(confidence), 2))
    probs[np.arange(len(confidence)), predicted] = confidence
    probs[np.arange(len(confidence)), 1 - predicted] = 1 - confidence
    return probs


def _synthetic_predictions(n, low, overconfidence, seed):
    """`n` two-class predictions with confidences uniform in `[low, 1)`,
    each right with probability `confidence - overconfidence`."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(low, 1.0, size=n)
    predicted = rng.integers(0, 2, size=n)
    correct = rng.uniform(size=n) < confidence - overconfidence
    labels = np.where(correct, predicted, 1 - predicted)
    return labels, _binary_probs(confidence, predicted)


def _message(name, expected, received):
    return re.escape(
        f"Invalid value for argument `{name}`. {expected} Received: {received}"
    )


# -- predictive entropy and mutual information -------------------------------


def test_predictive_entropy_hand_computed():
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(
        predictive_entropy(probs), [0.0, LOG2, LOG3], atol=1e-12
    )


def test_predictive_entropy_averages_samples_first():
    # Two confident samples that disagree: the mean is uniform.
    samples = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    np.testing.assert_allclose(predictive_entropy(samples), [LOG2])


def test_predictive_entropy_matches_scipy():
    probs = _dirichlet(50, 5, seed=0, concentration=0.3)
    probs[:5, 0] = 0.0  # exact zeros: 0 log 0 = 0
    probs /= probs.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(
        predictive_entropy(probs), stats.entropy(probs, axis=1), rtol=1e-10
    )
    samples = _dirichlet((7, 20), 4, seed=1)
    np.testing.assert_allclose(
        predictive_entropy(samples),
        stats.entropy(samples.mean(axis=0), axis=1),
        rtol=1e-10,
    )


def test_predictive_entropy_accepts_float32_softmax():
    logits = normal_inputs((10, 6))
    probs = to_numpy(keras.ops.softmax(logits))
    assert probs.dtype == np.float32
    reference = stats.entropy(probs.astype("float64"), axis=1)
    np.testing.assert_allclose(predictive_entropy(probs), reference, rtol=1e-6)


def test_mutual_information_zero_when_samples_agree():
    probs = _dirichlet(30, 4, seed=2)
    samples = np.repeat(probs[None], 6, axis=0)
    np.testing.assert_allclose(mutual_information(samples), 0.0, atol=1e-12)


def test_mutual_information_hand_computed():
    # Full disagreement of confident samples: all entropy is epistemic.
    samples = np.array([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]])
    np.testing.assert_allclose(
        mutual_information(samples), [LOG2, 0.0], atol=1e-12
    )


def test_mutual_information_matches_scipy_and_is_bounded():
    samples = _dirichlet((8, 40), 3, seed=3)
    expected = stats.entropy(samples.mean(axis=0), axis=1) - stats.entropy(
        samples, axis=2
    ).mean(axis=0)
    information = mutual_information(samples)
    np.testing.assert_allclose(information, expected, rtol=1e-10)
    assert np.all(information >= 0)
    assert np.all(information <= predictive_entropy(samples) + 1e-12)


# -- expected calibration error ----------------------------------------------


def test_ece_hand_computed():
    # Confidences 0.95, 0.95 (bin 9: accuracy 1/2), 0.85 (bin 8, correct),
    # 0.65 (bin 6, correct):
    # ECE = (2 * |0.5 - 0.95| + |1 - 0.85| + |1 - 0.65|) / 4 = 0.35.
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.15, 0.85], [0.65, 0.35]])
    labels = np.array([0, 1, 1, 0])
    assert expected_calibration_error(labels, probs, num_bins=10) == (
        pytest.approx(0.35, abs=1e-12)
    )
    # One bin: |accuracy - mean confidence| = |0.75 - 0.85|.
    assert expected_calibration_error(labels, probs, num_bins=1) == (
        pytest.approx(0.10, abs=1e-12)
    )


def test_ece_label_formats_and_samples_agree():
    probs = _dirichlet(60, 4, seed=4)
    labels = np.random.default_rng(4).integers(0, 4, size=60)
    expected = _reference_ece(labels, probs, 15)
    assert expected_calibration_error(labels, probs) == pytest.approx(expected)
    assert expected_calibration_error(labels[:, None], probs) == (
        pytest.approx(expected)
    )
    one_hot = np.eye(4)[labels]
    assert expected_calibration_error(one_hot, probs) == pytest.approx(expected)
    # Samples are averaged first.
    samples = _dirichlet((5, 60), 4, seed=5)
    assert expected_calibration_error(labels, samples) == pytest.approx(
        _reference_ece(labels, samples.mean(axis=0), 15)
    )


@pytest.mark.parametrize("num_bins", [1, 7, 15, 40])
def test_ece_matches_bin_by_bin_reference(num_bins):
    probs = _dirichlet(500, 10, seed=num_bins, concentration=0.2)
    labels = np.random.default_rng(num_bins).integers(0, 10, size=500)
    assert expected_calibration_error(labels, probs, num_bins) == (
        pytest.approx(_reference_ece(labels, probs, num_bins), abs=1e-12)
    )


@pytest.mark.slow
def test_ece_of_calibrated_predictions_is_near_zero():
    # Each prediction is right with probability equal to its confidence.
    # The ECE is then only sampling noise: confidences in [0.5, 1) fill 8 of
    # the 15 bins with ~2500 of the 20000 examples each, a bin's accuracy has
    # standard deviation <= 0.5 / sqrt(2500) = 0.01, so the expected ECE is
    # <= 0.8 * 0.01 and its spread ~0.002: 0.02 is > 5 spreads away.
    labels, probs = _synthetic_predictions(20000, 0.5, 0.0, seed=6)
    assert expected_calibration_error(labels, probs) < 0.02


@pytest.mark.slow
def test_ece_of_overconfident_predictions():
    # Accuracy is confidence - 0.2 everywhere, so every bin's gap is 0.2 up
    # to sampling noise: ~2000 of the 12000 examples per populated bin give a
    # per-bin standard deviation <= 0.011 and ~0.005 for the weighted mean.
    labels, probs = _synthetic_predictions(12000, 0.6, 0.2, seed=7)
    assert expected_calibration_error(labels, probs) == pytest.approx(
        0.2, abs=0.02
    )


def test_ece_of_no_examples_is_zero():
    assert expected_calibration_error(np.zeros(0), np.zeros((0, 3))) == 0.0


# -- argument errors ---------------------------------------------------------


@pytest.mark.parametrize("num_bins", [0, -3, 2.5, True])
def test_ece_rejects_bad_num_bins(num_bins):
    probs = np.array([[0.5, 0.5]])
    match = _message(
        "num_bins",
        "Expected a strictly positive integer.",
        f"num_bins={num_bins!r}",
    )
    with pytest.raises(ValueError, match=match):
        expected_calibration_error([0], probs, num_bins=num_bins)
    with pytest.raises(ValueError, match=match):
        kb.metrics.ExpectedCalibrationError(num_bins=num_bins)


def test_probability_shape_errors():
    with pytest.raises(
        ValueError,
        match=_message(
            "probs",
            "Expected an array of shape (N, K) or (num_samples, N, K) with "
            "K >= 2 classes.",
            "probs.shape=(4,)",
        ),
    ):
        predictive_entropy(np.full(4, 0.25))
    with pytest.raises(
        ValueError,
        match=_message(
            "prob_samples",
            "Expected an array of shape (num_samples, N, K) with K >= 2 "
            "classes.",
            "prob_samples.shape=(3, 2)",
        ),
    ):
        mutual_information(np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match=re.escape("probs.shape=(5, 1)")):
        expected_calibration_error(np.zeros(5), np.ones((5, 1)))


def test_logits_are_not_probabilities():
    logits = np.array([[2.0, -1.0, 0.5]])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Invalid value for argument `probs`. Expected probabilities: "
            "finite, non-negative, summing to 1 over the last axis (apply a "
            "softmax to logits first). Received: probs with values in "
            "[-1.0, 2.0] and row sums in [1.5, 1.5]"
        ),
    ):
        predictive_entropy(logits)
    with pytest.raises(ValueError, match="summing to 1"):
        mutual_information(np.full((2, 1, 2), 0.6))
    with pytest.raises(ValueError, match="finite"):
        predictive_entropy(np.array([[np.nan, 1.0]]))


def test_ece_label_errors():
    probs = np.full((3, 4), 0.25)
    with pytest.raises(
        ValueError,
        match=_message(
            "y_true",
            "Expected integer labels of shape (3,) or one-hot rows of shape "
            "(3, 4), matching `probs`.",
            "y_true.shape=(2,)",
        ),
    ):
        expected_calibration_error([0, 1], probs)
    with pytest.raises(
        ValueError,
        match=_message(
            "y_true",
            "Expected integer class labels in [0, 4).",
            "y_true with values in [0, 4]",
        ),
    ):
        expected_calibration_error([0, 4, 1], probs)
    with pytest.raises(ValueError, match=re.escape("in [0, 4).")):
        expected_calibration_error([0.5, 1, 2], probs)


# -- the Keras metric --------------------------------------------------------


def _value(metric):
    return float(to_numpy(metric.result()))


def test_metric_accumulates_batches_like_the_function():
    probs = _dirichlet(90, 5, seed=8, concentration=0.3).astype("float32")
    labels = np.random.default_rng(8).integers(0, 5, size=90)
    metric = kb.metrics.ExpectedCalibrationError(num_bins=12)
    assert _value(metric) == 0.0
    for start in range(0, 90, 25):  # batches of 25, 25, 25, 15
        metric.update_state(
            labels[start : start + 25], probs[start : start + 25]
        )
    # float32 state against the float64 function: sums of <= 90 terms.
    assert _value(metric) == pytest.approx(
        expected_calibration_error(labels, probs, num_bins=12), abs=1e-5
    )
    metric.reset_state()
    assert _value(metric) == 0.0
    metric.update_state(np.eye(5)[labels[:40]], probs[:40])  # one-hot
    assert _value(metric) == pytest.approx(
        expected_calibration_error(labels[:40], probs[:40], num_bins=12),
        abs=1e-5,
    )


def test_metric_integer_sample_weights_repeat_examples():
    probs = _dirichlet(20, 3, seed=9).astype("float32")
    labels = np.random.default_rng(9).integers(0, 3, size=(20, 1))
    weights = np.random.default_rng(10).integers(0, 4, size=20)
    metric = kb.metrics.ExpectedCalibrationError()
    metric.update_state(labels, probs, sample_weight=weights)
    repeated = expected_calibration_error(
        np.repeat(labels, weights, axis=0), np.repeat(probs, weights, axis=0)
    )
    assert _value(metric) == pytest.approx(repeated, abs=1e-5)


def test_metric_casts_half_precision_predictions():
    probs = _dirichlet(30, 4, seed=11).astype("float16")
    labels = np.random.default_rng(11).integers(0, 4, size=30)
    metric = kb.metrics.ExpectedCalibrationError()
    metric.update_state(labels, probs)
    # float16 rows sum to 1 only within ~1e-3.
    expected = expected_calibration_error(labels, probs.astype("float64"))
    assert _value(metric) == pytest.approx(expected, abs=1e-5)


def test_metric_config_round_trip():
    metric = kb.metrics.ExpectedCalibrationError(num_bins=7, name="ece7")
    config = metric.get_config()
    assert config == {"num_bins": 7, "name": "ece7", "dtype": "float32"}
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(metric)
    )
    assert type(revived) is kb.metrics.ExpectedCalibrationError
    assert revived.get_config() == config


def _classifier(num_classes=3, seed=1):
    return keras.Sequential(
        [
            keras.Input((4,)),
            kb.layers.DenseFlipout(8, activation="relu", seed=seed),
            kb.layers.DenseFlipout(
                num_classes, activation="softmax", seed=seed
            ),
        ]
    )


def _classification_data(n=48, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 1).astype("int64")
    return x, np.minimum(y, num_classes - 1)


def _compiled_classifier(jit_compile="auto"):
    model = _classifier()
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=[kb.metrics.ExpectedCalibrationError(name="ece")],
        jit_compile=jit_compile,
    )
    return model


def _check_evaluate(model, x, y):
    # Mean mode makes evaluate and a direct call see the same probabilities;
    # the metric accumulates 3 batches into the function's value.
    kb.set_posterior_value(model, "mean")
    result = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    probs = to_numpy(model(x))
    assert result["ece"] == pytest.approx(
        expected_calibration_error(y, probs), abs=1e-5
    )


def test_metric_in_fit_and_evaluate():
    x, y = _classification_data()
    model = _compiled_classifier()
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert len(history.history["ece"]) == 2
    assert all(0.0 <= v <= 1.0 for v in history.history["ece"])
    _check_evaluate(model, x, y)


@only_on(
    "tensorflow",
    reason="XLA is TensorFlow's opt-in; JAX's default (tested above) "
    "already compiles with jax.jit, and torch's is torch.compile",
)
def test_metric_in_xla_evaluate():
    x, y = _classification_data()
    _check_evaluate(_compiled_classifier(jit_compile=True), x, y)


# -- mc_predict --------------------------------------------------------------


def test_mc_predict_shape_and_fresh_draws():
    x, _ = _classification_data(n=10)
    model = _classifier()
    samples = mc_predict(model, x, num_samples=4, batch_size=4, verbose=0)
    assert samples.shape == (4, 10, 3)
    assert samples.dtype == np.float32
    np.testing.assert_allclose(samples.sum(axis=-1), 1.0, rtol=1e-5)
    # Every pair of passes differs: each pass draws new weights.
    for i in range(4):
        for j in range(i):
            assert not np.allclose(samples[i], samples[j])


def test_mc_predict_mean_mode_repeats_the_mean_prediction():
    x, _ = _classification_data(n=10)
    model = _classifier()
    kb.set_posterior_value(model, "mean")
    samples = mc_predict(model, x, num_samples=3, verbose=0)
    expected = model.predict(x, verbose=0)
    for sample in samples:
        np.testing.assert_array_equal(sample, expected)
    assert np.all(mutual_information(samples) < 1e-6)
    # Back to sampling, in the same compiled predict function.
    kb.set_posterior_value(model, "sample")
    samples = mc_predict(model, x, num_samples=2, verbose=0)
    assert not np.allclose(samples[0], samples[1])


@pytest.mark.slow
def test_mc_predict_samples_center_on_the_posterior_mean():
    # A linear reparameterization layer: every output is Gaussian with mean
    # equal to the mean-mode output. With 200 samples the sample mean of an
    # output is within 5 standard errors (sd / sqrt(200)) of it, except with
    # probability ~6e-7 per output (24 outputs).
    x, _ = _classification_data(n=8)
    model = keras.Sequential(
        [keras.Input((4,)), kb.layers.DenseReparameterization(3, seed=3)]
    )
    layer = model.layers[0]
    layer.kernel_untransformed_scale.assign(
        np.full((4, 3), 0.0, dtype="float32")  # scale softplus(0) ~ 0.69
    )
    samples = mc_predict(model, x, num_samples=200, batch_size=8, verbose=0)
    kb.set_posterior_value(model, "mean")
    mean_output = model.predict(x, verbose=0)
    sd = samples.std(axis=0, ddof=1)
    assert np.all(sd > 0.1)
    error = np.abs(samples.mean(axis=0) - mean_output)
    assert np.all(error < 5 * sd / np.sqrt(200))


def test_mc_predict_multiple_outputs():
    inputs = keras.Input((4,))
    hidden = kb.layers.DenseFlipout(5, seed=4)(inputs)
    outputs = {
        "probs": keras.layers.Softmax()(hidden),
        "value": keras.layers.Dense(1)(hidden),
    }
    model = keras.Model(inputs, outputs)
    x, _ = _classification_data(n=6)
    samples = mc_predict(model, x, num_samples=3, verbose=0)
    assert samples["probs"].shape == (3, 6, 5)
    assert samples["value"].shape == (3, 6, 1)


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, batch_size):
        super().__init__()
        self.x, self.batch_size = x, batch_size

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        start = index * self.batch_size
        return (self.x[start : start + self.batch_size],)


def test_mc_predict_reads_a_dataset_once_per_sample():
    x, _ = _classification_data(n=10)
    model = _classifier()
    samples = mc_predict(model, _Batches(x, 4), num_samples=3, verbose=0)
    assert samples.shape == (3, 10, 3)
    assert not np.allclose(samples[0], samples[1])
    kb.set_posterior_value(model, "mean")
    from_dataset = mc_predict(model, _Batches(x, 4), num_samples=2, verbose=0)
    from_arrays = mc_predict(model, x, num_samples=1, verbose=0)
    np.testing.assert_allclose(from_dataset[0], from_arrays[0], rtol=1e-6)
    np.testing.assert_allclose(from_dataset[1], from_arrays[0], rtol=1e-6)


def test_mc_predict_progress_bar(capsys):
    x, _ = _classification_data(n=4)
    model = _classifier()
    mc_predict(model, x, num_samples=3, verbose=0)
    assert "3/3" not in capsys.readouterr().out
    mc_predict(model, x, num_samples=3, verbose=1)
    assert "3/3" in capsys.readouterr().out


def test_mc_predict_argument_errors():
    model = _classifier()
    x = np.zeros((2, 4), dtype="float32")
    with pytest.raises(
        ValueError,
        match=_message(
            "num_samples",
            "Expected a strictly positive integer.",
            "num_samples=0",
        ),
    ):
        mc_predict(model, x, num_samples=0)
    with pytest.raises(
        ValueError,
        match=_message(
            "batch_size",
            "Expected a strictly positive integer.",
            "batch_size=-1",
        ),
    ):
        mc_predict(model, x, batch_size=-1)
    with pytest.raises(
        ValueError,
        match=_message(
            "verbose", 'Expected "auto", 0, 1 or 2.', "verbose='loud'"
        ),
    ):
        mc_predict(model, x, verbose="loud")
    with pytest.raises(
        ValueError, match=re.escape("Expected a `keras.Model`.")
    ):
        mc_predict(model.layers[0], x)
