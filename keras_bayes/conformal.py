"""Split conformal prediction sets for any classifier's probabilities.

A split conformal predictor (Vovk et al. 2005; Angelopoulos and Bates 2021)
turns a classifier's probabilities into a set of classes per example. It
scores how badly each calibration example's true class fits, takes the
`ceil((n + 1)(1 - alpha)) / n` empirical quantile `q` of the `n` scores,
and predicts for a new example every class whose score is at most `q`.
If the calibration and test examples are exchangeable (for example drawn
i.i.d. from one distribution), the set holds the true class with
probability at least `1 - alpha`, whatever the model: the guarantee is
marginal (on average over examples, not for each example or class), and
holds for a fresh test example, not conditionally on one calibration
split. It says nothing under distribution shift.

Scores (`score=`):

- `"lac"` (least ambiguous set-valued classifier, Sadinle et al. 2019):
  `1 - p_y`. The sets are the classes with `p_k >= 1 - q`; they are the
  smallest on average among sets of the same coverage built from the same
  probabilities, and may be empty.
- `"aps"` (adaptive prediction sets, Romano et al. 2020): the probability
  mass of the classes ranked at or above `y` (classes sorted by decreasing
  probability, ties by class index). Sets grow with the model's
  uncertainty. Non-randomised (default, `randomized=False`): the set takes
  classes in order of decreasing probability until their mass reaches
  `q`, the class that crosses `q` included; never empty, and conservative
  (coverage at least `1 - alpha`, often more). Randomised
  (`randomized=True`): the score of `y` counts a uniform random fraction
  `u` of `p_y`, and a class is in the set when its mass above it plus `u`
  times its own probability is at most `q` (one `u` per test example);
  coverage then close to exactly `1 - alpha`, sets may be empty.

NumPy throughout: the inputs are arrays of probabilities (backend tensors
are converted with `keras.ops.convert_to_numpy`).
"""

import math
import numbers

import numpy as np

from keras_bayes import _arrays, _validation

_SCORES = ("lac", "aps")


def _alpha(alpha):
    real = isinstance(alpha, numbers.Real) and not isinstance(alpha, bool)
    if not real or not 0 < float(alpha) < 1:
        raise _validation.invalid(
            "alpha", "Expected a number strictly between 0 and 1.", alpha
        )
    return float(alpha)


def quantile_rank(n, alpha):
    """`ceil((n + 1)(1 - alpha))`: the rank (1-based) of the calibration
    score used as threshold; above `n` the threshold is infinite.

    The product is rounded to 9 decimals first, so that `n = 9`,
    `alpha = 0.1` gives 9 (not 10 from `10 * 0.9 = 9.000000000000002`).
    """
    return math.ceil(round((n + 1) * (1.0 - alpha), 9))


def _order(probs):
    """Classes by decreasing probability (ties: lower index first), and the
    mass of the classes ranked strictly above each class."""
    order = np.argsort(-probs, axis=1, kind="stable")
    sorted_probs = np.take_along_axis(probs, order, axis=1)
    above_sorted = np.cumsum(sorted_probs, axis=1) - sorted_probs
    above = np.empty_like(probs)
    np.put_along_axis(above, order, above_sorted, axis=1)
    return above


class SplitConformal:
    """Split conformal prediction sets from class probabilities.

    See the module docstring for the scores and the guarantee.

    Args:
        score: `"lac"` (default) or `"aps"`.
        alpha: the miscoverage level, in (0, 1); the sets hold the true
            class with probability at least `1 - alpha`. Defaults to 0.1.
        randomized: for `"aps"` only: use the randomised score (coverage
            close to exactly `1 - alpha`) instead of the conservative
            non-randomised one (default).
        seed: seed of the uniform draws of the randomised score.

    Attributes (after `fit`):
        threshold_: the score threshold `q` (`inf` when
            `ceil((n + 1)(1 - alpha)) > n`: too few calibration examples
            for this `alpha`, and every set holds every class).
        quantile_level_: `ceil((n + 1)(1 - alpha)) / n`, the level of the
            empirical quantile taken.
        n_calibration_: the number of calibration examples `n`.

    Example:

    ```python
    conformal = kb.conformal.SplitConformal(score="aps", alpha=0.1)
    conformal.fit(model.predict(x_val), y_val)
    sets = conformal.predict_sets(model.predict(x_test))
    kb.conformal.coverage(sets, y_test)  # about 0.9 or more
    ```
    """

    def __init__(self, score="lac", alpha=0.1, randomized=False, seed=None):
        if not isinstance(score, str) or score.lower() not in _SCORES:
            raise _validation.invalid(
                "score", 'Expected "lac" or "aps".', score
            )
        self.score = score.lower()
        self.alpha = _alpha(alpha)
        if not isinstance(randomized, bool):
            raise _validation.invalid(
                "randomized", "Expected True or False.", randomized
            )
        if randomized and self.score != "aps":
            raise _validation.invalid(
                "randomized",
                'Expected False for score="lac" (only "aps" is randomised).',
                randomized,
            )
        self.randomized = randomized
        self.seed = _validation.seed(seed)
        self._rng = np.random.default_rng(self.seed)
        self.threshold_ = None
        self.quantile_level_ = None
        self.n_calibration_ = None

    def scores(self, probs, y):
        """The conformity score of each example's class `y`, shape `(N,)`:
        higher means the class fits worse."""
        probs = _arrays.probabilities(probs, "probs")
        labels = _arrays.labels(y, *probs.shape, "y")
        return self._scores(probs, labels)

    def _scores(self, probs, labels):
        rows = np.arange(len(labels))
        if self.score == "lac":
            return 1.0 - probs[rows, labels]
        above = _order(probs)[rows, labels]
        own = probs[rows, labels]
        if self.randomized:
            return above + self._rng.uniform(size=len(labels)) * own
        return above + own

    def fit(self, probs_val, y_val):
        """Computes the threshold from calibration data.

        Args:
            probs_val: class probabilities of held-out examples, shape
                `(n, K)`, not used to train the model.
            y_val: their labels, shape `(n,)` or `(n, 1)`, or one-hot.

        Returns:
            The predictor itself.
        """
        probs = _arrays.probabilities(probs_val, "probs_val")
        labels = _arrays.labels(y_val, *probs.shape, "y_val")
        n = len(labels)
        if n == 0:
            raise _validation.invalid(
                "probs_val",
                "Expected at least one calibration example.",
                "probs_val.shape=(0, ...)",
            )
        rank = quantile_rank(n, self.alpha)
        scores = np.sort(self._scores(probs, labels))
        self.threshold_ = float(scores[rank - 1]) if rank <= n else math.inf
        self.quantile_level_ = rank / n
        self.n_calibration_ = n
        return self

    def predict_sets(self, probs):
        """Prediction sets, a boolean array of shape `(N, K)`: entry
        `[i, k]` says whether class `k` is in example `i`'s set."""
        if self.threshold_ is None:
            raise ValueError(
                "This SplitConformal is not fitted yet: call "
                "`fit(probs_val, y_val)` before `predict_sets`. "
                "Received: threshold_=None"
            )
        probs = _arrays.probabilities(probs, "probs")
        q = self.threshold_
        if self.score == "lac":
            return 1.0 - probs <= q
        above = _order(probs)
        if self.randomized:
            u = self._rng.uniform(size=(len(probs), 1))
            return above + u * probs <= q
        # Classes in order until their mass reaches q, the crossing one
        # included (the mass strictly above it is below q); and every class
        # whose score is at most q, so that a class of probability 0 with
        # score exactly q is kept too.
        return (above < q) | (above + probs <= q)


def _sets(sets, name="sets"):
    array = _arrays.to_numpy(sets)
    if array.ndim != 2 or array.dtype != bool:
        raise _arrays.error(
            name,
            "Expected a boolean array of shape (N, K), as from "
            "`SplitConformal.predict_sets`.",
            f"{name}.shape={array.shape}, {name}.dtype={array.dtype}",
        )
    return array


def coverage(sets, y):
    """The fraction of examples whose set holds their class.

    Args:
        sets: boolean prediction sets, shape `(N, K)`.
        y: integer labels, shape `(N,)` or `(N, 1)`, or one-hot rows.

    Returns:
        A float in [0, 1] (`nan` for `N = 0`).
    """
    sets = _sets(sets)
    labels = _arrays.labels(y, *sets.shape, "y")
    if len(labels) == 0:
        return math.nan
    return float(np.mean(sets[np.arange(len(labels)), labels]))


def average_set_size(sets):
    """The mean number of classes per prediction set (`nan` for `N = 0`)."""
    sets = _sets(sets)
    if len(sets) == 0:
        return math.nan
    return float(np.mean(np.sum(sets, axis=1)))
