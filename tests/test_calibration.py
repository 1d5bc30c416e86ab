"""`kb.calibration`: the fitted temperature against a brute-force grid
minimiser of the NLL, the layer against NumPy, `.keras` round trips, a
calibration gain on an over-confident synthetic model, and the errors."""

import math
import os

import keras
import numpy as np
import pytest
from scipy.special import log_softmax

import keras_bayes as kb
from keras_bayes.calibration import (
    TemperatureScaling,
    fit_temperature,
    logits_from_probabilities,
)
from tests.helpers import assert_value_error, to_numpy


def _reference_nll(logits, labels, temperature):
    """Mean NLL of softmax(logits / T), through scipy's log-softmax."""
    log_probs = log_softmax(logits / temperature, axis=1)
    return -log_probs[np.arange(len(labels)), labels].mean()


def _grid_minimiser(logits, labels, low=1e-2, high=1e2, points=1501):
    """The grid temperature with the lowest NLL, and the grid's ratio."""
    grid = np.geomspace(low, high, points)
    values = [_reference_nll(logits, labels, t) for t in grid]
    return grid[int(np.argmin(values))], grid[1] / grid[0]


def _synthetic(n, num_classes, sharpness, seed):
    """Logits `sharpness` times too large: labels are drawn from
    softmax(z), the model reports `sharpness * z`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=(n, num_classes))
    p = np.exp(log_softmax(z, axis=1))
    labels = (p.cumsum(axis=1) > rng.uniform(size=(n, 1))).argmax(axis=1)
    return sharpness * z, labels


@pytest.mark.parametrize(
    "sharpness, seed",
    [
        pytest.param(3.0, 0, id="over-confident"),
        pytest.param(0.4, 1, id="under-confident"),
        pytest.param(1.0, 2, id="calibrated"),
    ],
)
def test_temperature_matches_grid_minimiser(sharpness, seed):
    logits, labels = _synthetic(400, 5, sharpness, seed)
    fitted = fit_temperature(logits, labels)
    best, ratio = _grid_minimiser(logits, labels)
    # Within one grid step of the grid's best (the grid step is 0.62%),
    # and at least as good as the grid's best to rounding.
    assert best / ratio <= fitted <= best * ratio
    assert _reference_nll(logits, labels, fitted) <= (
        _reference_nll(logits, labels, best) + 1e-12
    )
    # The true temperature is `sharpness`; 400 examples pin it to ~15%.
    assert abs(fitted / sharpness - 1) < 0.25


def test_all_correct_with_margin_gives_lowest_bound():
    # Every example right with a margin: NLL falls as T -> 0.
    logits = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, -1.0]])
    with pytest.warns(UserWarning, match=r"lowest at the lower bound T=0\.1 "):
        assert fit_temperature(logits, [0, 1, 0], bounds=(0.1, 10)) == 0.1


def test_uninformative_logits_give_highest_bound():
    # Same logits, labels half one class, half the other: p = 1/2 is best,
    # which T -> infinity approaches.
    logits = np.array([[1.0, 0.0]] * 4)
    with pytest.warns(UserWarning, match=r"upper bound T=10 "):
        assert fit_temperature(logits, [0, 1, 0, 1], bounds=(0.1, 10)) == 10


def test_probabilities_give_the_temperature_of_their_logits():
    # log softmax(z) differs from z by a per-row constant: same NLL(T).
    logits, labels = _synthetic(300, 4, 2.0, 3)
    probs = np.exp(log_softmax(logits, axis=1))
    from_probs = fit_temperature(logits_from_probabilities(probs), labels)
    assert from_probs == pytest.approx(fit_temperature(logits, labels), 1e-6)


def test_one_hot_labels_and_backend_tensors_give_the_same_fit():
    logits, labels = _synthetic(200, 3, 2.0, 4)
    one_hot = np.eye(3)[labels]
    reference = fit_temperature(logits, labels)
    tensor = keras.ops.convert_to_tensor(logits.astype("float32"))
    assert fit_temperature(logits, one_hot) == reference
    assert fit_temperature(tensor, labels) == pytest.approx(reference, 1e-5)


@pytest.mark.parametrize("output_mode", ["logits", "probabilities"])
def test_layer_divides_logits_by_the_temperature(output_mode):
    logits, labels = _synthetic(64, 5, 3.0, 5)
    layer = TemperatureScaling(output_mode=output_mode).fit(logits, labels)
    expected = logits / fit_temperature(logits, labels)
    if output_mode == "probabilities":
        expected = np.exp(log_softmax(expected, axis=1))
    got = to_numpy(layer(logits.astype("float32")))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert layer.trainable_weights == []


def test_model_with_the_layer_saves_and_loads(tmp_path):
    logits, labels = _synthetic(128, 4, 3.0, 6)
    base = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(4, kernel_initializer="identity"),
        ]
    )
    scaling = TemperatureScaling().fit(base.predict(logits, verbose=0), labels)
    model = keras.Sequential([base, scaling, keras.layers.Softmax()])
    before = model.predict(logits, verbose=0)
    path = os.path.join(tmp_path, "calibrated.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer = loaded.layers[1]
    assert isinstance(layer, kb.calibration.TemperatureScaling)
    assert layer.temperature == pytest.approx(scaling.temperature, 1e-6)
    np.testing.assert_allclose(
        loaded.predict(logits, verbose=0), before, rtol=1e-6, atol=1e-7
    )
    config = TemperatureScaling.from_config(scaling.get_config())
    assert config.temperature == pytest.approx(scaling.temperature, 1e-6)


def test_temperature_scaling_lowers_ece_and_nll_of_overconfident_model():
    logits, labels = _synthetic(4000, 10, 4.0, 7)
    val, test = slice(0, 2000), slice(2000, None)
    scaling = TemperatureScaling(output_mode="probabilities")
    scaling.fit(logits[val], labels[val])
    raw = np.exp(log_softmax(logits[test], axis=1))
    calibrated = to_numpy(scaling(logits[test].astype("float32")))
    ece = kb.uncertainty.expected_calibration_error
    # Confidence of a 4x sharpened model is far above its accuracy.
    assert ece(labels[test], raw) > 0.15
    assert ece(labels[test], calibrated) < 0.05
    rows = np.arange(2000), labels[test]
    nll_raw = -np.log(raw[rows]).mean()
    nll_calibrated = -np.log(calibrated[rows]).mean()
    assert nll_calibrated < nll_raw - 0.5
    # The predicted class never changes.
    np.testing.assert_array_equal(raw.argmax(1), calibrated.argmax(1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        pytest.param(
            {"temperature": 0.0},
            "Invalid value for argument `temperature`. Expected a finite, "
            "strictly positive number. Received: temperature=0.0",
            id="zero-temperature",
        ),
        pytest.param(
            {"temperature": -2},
            "Invalid value for argument `temperature`. Expected a finite, "
            "strictly positive number. Received: temperature=-2",
            id="negative-temperature",
        ),
        pytest.param(
            {"temperature": math.inf},
            "Invalid value for argument `temperature`. Expected a finite, "
            "strictly positive number. Received: temperature=inf",
            id="infinite-temperature",
        ),
        pytest.param(
            {"output_mode": "softmax"},
            'Invalid value for argument `output_mode`. Expected "logits" '
            "or \"probabilities\". Received: output_mode='softmax'",
            id="output-mode",
        ),
    ],
)
def test_constructor_errors(kwargs, message):
    assert_value_error(lambda: TemperatureScaling(**kwargs), message)


def test_set_temperature_rejects_non_positive_and_changes_nothing():
    layer = TemperatureScaling(temperature=2.0)
    assert_value_error(
        lambda: layer.set_temperature(-1.0),
        "Invalid value for argument `temperature`. Expected a finite, "
        "strictly positive number. Received: temperature=-1.0",
    )
    assert layer.temperature == pytest.approx(2.0)


LOGITS = np.zeros((3, 4))


@pytest.mark.parametrize(
    "logits, y, kwargs, message",
    [
        pytest.param(
            np.zeros(4),
            [0],
            {},
            "Invalid value for argument `logits`. Expected logits of shape "
            "(N, K) with K >= 2 classes. Received: logits.shape=(4,)",
            id="logits-1d",
        ),
        pytest.param(
            np.array([[0.0, np.nan]]),
            [0],
            {},
            "Invalid value for argument `logits`. Expected finite logits. "
            "Received: logits with 1 non-finite values",
            id="logits-nan",
        ),
        pytest.param(
            np.zeros((0, 3)),
            [],
            {},
            "Invalid value for argument `logits`. Expected at least one "
            "example. Received: logits.shape=(0, 3)",
            id="no-examples",
        ),
        pytest.param(
            LOGITS,
            [0, 4, 1],
            {},
            "Invalid value for argument `y`. Expected integer class labels "
            "in [0, 4). Received: y with values in [0, 4]",
            id="label-too-large",
        ),
        pytest.param(
            LOGITS,
            [0, -1, 1],
            {},
            "Invalid value for argument `y`. Expected integer class labels "
            "in [0, 4). Received: y with values in [-1, 1]",
            id="label-negative",
        ),
        pytest.param(
            LOGITS,
            [0, 1],
            {},
            "Invalid value for argument `y`. Expected integer labels of "
            "shape (3,) or one-hot rows of shape (3, 4), one per row of the "
            "predictions. Received: y.shape=(2,)",
            id="label-count",
        ),
        pytest.param(
            LOGITS,
            [0, 1, 2],
            {"bounds": (1.0, 0.5)},
            "Invalid value for argument `bounds`. Expected a pair (low, "
            "high) with 0 < low < high, finite. Received: bounds=(1.0, 0.5)",
            id="bounds",
        ),
    ],
)
def test_fit_errors(logits, y, kwargs, message):
    layer = TemperatureScaling(temperature=1.5)
    assert_value_error(lambda: layer.fit(logits, y, **kwargs), message)
    assert layer.temperature == pytest.approx(1.5)


def test_logits_from_probabilities_rejects_logits():
    assert_value_error(
        lambda: logits_from_probabilities([[2.0, -1.0]]),
        "Invalid value for argument `probs`. Expected probabilities: "
        "non-negative, each row summing to 1 within 0.01 (apply a softmax "
        "to logits first). Received: probs with values in [-1, 2] and row "
        "sums in [1, 1]",
    )
