"""`kb.conformal`: the threshold on hand-computed cases, the coverage
guarantee over many random draws, nestedness, set sizes, and the errors."""

import math

import keras
import numpy as np
import pytest

from keras_bayes.conformal import (
    SplitConformal,
    average_set_size,
    coverage,
    quantile_rank,
)
from tests.helpers import assert_value_error

# Five calibration examples, three classes. True-class probabilities 0.6,
# 0.5, 0.3, 0.8, 0.1; by hand:
#   LAC scores 1 - p_y: 0.4, 0.5, 0.7, 0.2, 0.9; sorted 0.2 0.4 0.5 0.7 0.9.
#   APS scores (mass of the classes at or above y):
#     row 0, y=0: 0.6            row 1, y=1: 0.5 (top)    row 2, y=2: 0.5+0.3
#     row 3, y=0: 0.8            row 4, y=2: 0.6+0.3+0.1
#   sorted 0.5 0.6 0.8 0.8 1.0.
HAND_PROBS = np.array(
    [
        [0.6, 0.3, 0.1],
        [0.2, 0.5, 0.3],
        [0.5, 0.2, 0.3],
        [0.8, 0.15, 0.05],
        [0.6, 0.3, 0.1],
    ]
)
HAND_LABELS = np.array([0, 1, 2, 0, 2])


@pytest.mark.parametrize(
    "score, alpha, rank, threshold",
    [
        # ceil(6 * 0.5) = 3rd smallest.
        pytest.param("lac", 0.5, 3, 0.5, id="lac-0.5"),
        # ceil(6 * 0.7) = ceil(4.2) = 5th smallest.
        pytest.param("lac", 0.3, 5, 0.9, id="lac-0.3"),
        # ceil(6 * 0.9) = 6 > 5: infinite threshold.
        pytest.param("lac", 0.1, 6, math.inf, id="lac-0.1"),
        # ceil(6 * 0.6) = ceil(3.6) = 4th smallest.
        pytest.param("aps", 0.4, 4, 0.8, id="aps-0.4"),
        # ceil(6 * 0.8) = ceil(4.8) = 5th smallest.
        pytest.param("aps", 0.2, 5, 1.0, id="aps-0.2"),
    ],
)
def test_threshold_on_hand_computed_case(score, alpha, rank, threshold):
    conformal = SplitConformal(score, alpha).fit(HAND_PROBS, HAND_LABELS)
    assert conformal.threshold_ == pytest.approx(threshold, abs=1e-12)
    assert conformal.quantile_level_ == rank / 5
    assert conformal.n_calibration_ == 5


def test_hand_computed_sets():
    test = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    lac = SplitConformal("lac", 0.5).fit(HAND_PROBS, HAND_LABELS)
    # q = 0.5: classes with p >= 0.5.
    np.testing.assert_array_equal(
        lac.predict_sets(test), [[1, 0, 0], [0, 0, 0]]
    )
    aps = SplitConformal("aps", 0.4).fit(HAND_PROBS, HAND_LABELS)
    # q = 0.8: classes in order until the mass reaches 0.8 (the crossing
    # one included): row 0: 0.7, then 0.9 crosses; row 1: 0.4, 0.75, 1.0.
    np.testing.assert_array_equal(
        aps.predict_sets(test), [[1, 1, 0], [1, 1, 1]]
    )
    infinite = SplitConformal("lac", 0.1).fit(HAND_PROBS, HAND_LABELS)
    assert infinite.predict_sets(test).all()


def test_quantile_rank_survives_floating_point():
    # (9 + 1) * (1 - 0.1) is 9.000000000000002 in floating point.
    assert quantile_rank(9, 0.1) == 9
    assert quantile_rank(99, 0.05) == 95
    assert quantile_rank(10, 0.1) == 10  # ceil(9.9)


def _draw(rng, n, num_classes=10):
    """Exchangeable examples: miscalibrated model probabilities (labels
    come from a sharper distribution than the model reports)."""
    logits = rng.normal(scale=1.5, size=(n, num_classes))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    truth = np.exp(2 * logits) / np.exp(2 * logits).sum(1, keepdims=True)
    labels = (truth.cumsum(1) > rng.uniform(size=(n, 1))).argmax(1)
    return probs, labels


@pytest.mark.parametrize(
    "score, randomized",
    [
        pytest.param("lac", False, id="lac"),
        pytest.param("aps", False, id="aps"),
        pytest.param("aps", True, id="aps-randomized"),
    ],
)
def test_coverage_over_random_splits(score, randomized):
    alpha, n_cal, n_test, splits = 0.1, 500, 500, 200
    rng = np.random.default_rng(11)
    covered = []
    for split in range(splits):
        probs, labels = _draw(rng, n_cal + n_test)
        order = rng.permutation(n_cal + n_test)
        cal, test = order[:n_cal], order[n_cal:]
        conformal = SplitConformal(score, alpha, randomized, seed=split)
        conformal.fit(probs[cal], labels[cal])
        covered.append(
            coverage(conformal.predict_sets(probs[test]), labels[test])
        )
    # One split's coverage has standard deviation about
    # sqrt(a (1 - a) (1 / n_cal + 1 / n_test)) = 0.019; over 200
    # independent splits the mean's standard error is 0.0013. The
    # guarantee is E[coverage] >= 1 - alpha; allow 3 standard errors.
    standard_error = np.std(covered) / math.sqrt(splits)
    assert standard_error < 0.002
    assert np.mean(covered) >= 1 - alpha - 3 * standard_error
    if score == "lac" or randomized:
        # Continuous scores: E[coverage] = ceil(501 * 0.9) / 501 = 0.9002.
        assert np.mean(covered) <= 451 / 501 + 3 * standard_error


def test_aps_sets_are_nested_in_alpha():
    rng = np.random.default_rng(12)
    probs, labels = _draw(rng, 800)
    cal, test = slice(0, 400), slice(400, None)
    previous = None
    for alpha in (0.5, 0.3, 0.2, 0.1, 0.05, 0.01):
        sets = SplitConformal("aps", alpha).fit(probs[cal], labels[cal])
        sets = sets.predict_sets(probs[test])
        if previous is not None:
            assert np.all(sets >= previous)  # previous is a subset
        previous = sets


def test_lac_sets_are_smallest_on_average():
    # With calibrated probabilities LAC minimises the expected set size at
    # a given coverage (Sadinle et al. 2019).
    rng = np.random.default_rng(13)
    logits = rng.normal(scale=1.5, size=(4000, 10))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = (probs.cumsum(1) > rng.uniform(size=(4000, 1))).argmax(1)
    cal, test = slice(0, 2000), slice(2000, None)
    sizes = {}
    for name, score, randomized in [
        ("lac", "lac", False),
        ("aps", "aps", False),
        ("aps-randomized", "aps", True),
    ]:
        conformal = SplitConformal(score, 0.1, randomized, seed=0)
        conformal.fit(probs[cal], labels[cal])
        sizes[name] = average_set_size(conformal.predict_sets(probs[test]))
    assert sizes["lac"] < sizes["aps-randomized"] < sizes["aps"]


def test_backend_tensors_give_the_same_sets():
    rng = np.random.default_rng(14)
    probs, labels = _draw(rng, 200)
    probs = probs.astype("float32")
    reference = SplitConformal("aps", 0.2).fit(probs[:100], labels[:100])
    tensors = SplitConformal("aps", 0.2).fit(
        keras.ops.convert_to_tensor(probs[:100]),
        keras.ops.convert_to_tensor(labels[:100]),
    )
    assert tensors.threshold_ == reference.threshold_
    np.testing.assert_array_equal(
        tensors.predict_sets(keras.ops.convert_to_tensor(probs[100:])),
        reference.predict_sets(probs[100:]),
    )


def test_coverage_and_set_size_by_hand():
    sets = np.array([[True, False, True], [False, False, False]])
    assert coverage(sets, [2, 0]) == 0.5
    assert average_set_size(sets) == 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        pytest.param(
            {"alpha": 0.0},
            "Invalid value for argument `alpha`. Expected a number strictly "
            "between 0 and 1. Received: alpha=0.0",
            id="alpha-zero",
        ),
        pytest.param(
            {"alpha": 1},
            "Invalid value for argument `alpha`. Expected a number strictly "
            "between 0 and 1. Received: alpha=1",
            id="alpha-one",
        ),
        pytest.param(
            {"alpha": -0.1},
            "Invalid value for argument `alpha`. Expected a number strictly "
            "between 0 and 1. Received: alpha=-0.1",
            id="alpha-negative",
        ),
        pytest.param(
            {"alpha": "0.1"},
            "Invalid value for argument `alpha`. Expected a number strictly "
            "between 0 and 1. Received: alpha='0.1'",
            id="alpha-string",
        ),
        pytest.param(
            {"alpha": True},
            "Invalid value for argument `alpha`. Expected a number strictly "
            "between 0 and 1. Received: alpha=True",
            id="alpha-bool",
        ),
        pytest.param(
            {"score": "raps"},
            'Invalid value for argument `score`. Expected "lac" or '
            "\"aps\". Received: score='raps'",
            id="score",
        ),
        pytest.param(
            {"score": "lac", "randomized": True},
            "Invalid value for argument `randomized`. Expected False for "
            'score="lac" (only "aps" is randomised). '
            "Received: randomized=True",
            id="randomized-lac",
        ),
    ],
)
def test_constructor_errors(kwargs, message):
    assert_value_error(lambda: SplitConformal(**kwargs), message)


@pytest.mark.parametrize(
    "probs, y, message",
    [
        pytest.param(
            np.array([0.5, 0.5]),
            [0],
            "Invalid value for argument `probs_val`. Expected class "
            "probabilities of shape (N, K) with K >= 2 classes. "
            "Received: probs_val.shape=(2,)",
            id="probs-1d",
        ),
        pytest.param(
            np.array([[0.5, 0.3], [0.5, 0.5]]),
            [0, 1],
            "Invalid value for argument `probs_val`. Expected "
            "probabilities: non-negative, each row summing to 1 within 0.01 "
            "(apply a softmax to logits first). Received: probs_val with "
            "values in [0.3, 0.5] and row sums in [0.8, 1]",
            id="rows-not-summing",
        ),
        pytest.param(
            np.array([[0.5, 0.5], [0.5, 0.5]]),
            [0, 2],
            "Invalid value for argument `y_val`. Expected integer class "
            "labels in [0, 2). Received: y_val with values in [0, 2]",
            id="label-out-of-range",
        ),
        pytest.param(
            np.array([[0.5, 0.5], [0.5, 0.5]]),
            [0.5, 1],
            "Invalid value for argument `y_val`. Expected integer class "
            "labels in [0, 2). Received: y_val with values in [0.5, 1.0]",
            id="label-not-integer",
        ),
        pytest.param(
            np.array([[0.5, 0.5], [0.5, 0.5]]),
            [0, 1, 1],
            "Invalid value for argument `y_val`. Expected integer labels of "
            "shape (2,) or one-hot rows of shape (2, 2), one per row of the "
            "predictions. Received: y_val.shape=(3,)",
            id="label-count",
        ),
    ],
)
def test_fit_errors(probs, y, message):
    conformal = SplitConformal()
    assert_value_error(lambda: conformal.fit(probs, y), message)
    assert conformal.threshold_ is None


def test_predict_before_fit():
    assert_value_error(
        lambda: SplitConformal().predict_sets(np.array([[0.5, 0.5]])),
        "This SplitConformal is not fitted yet: call `fit(probs_val, "
        "y_val)` before `predict_sets`. Received: threshold_=None",
    )


def test_predict_rejects_logits():
    conformal = SplitConformal().fit(HAND_PROBS, HAND_LABELS)
    assert_value_error(
        lambda: conformal.predict_sets(np.array([[2.0, -1.0, 0.5]])),
        "Invalid value for argument `probs`. Expected probabilities: "
        "non-negative, each row summing to 1 within 0.01 (apply a softmax "
        "to logits first). Received: probs with values in [-1, 2] and row "
        "sums in [1.5, 1.5]",
    )


def test_coverage_rejects_non_boolean_sets():
    assert_value_error(
        lambda: coverage(np.ones((2, 3)), [0, 1]),
        "Invalid value for argument `sets`. Expected a boolean array of "
        "shape (N, K), as from `SplitConformal.predict_sets`. "
        "Received: sets.shape=(2, 3), sets.dtype=float64",
    )
