"""`kb.laplace.Laplace`: a fitted Laplace approximation, its marginal
likelihood, prior precision and predictives (made by `kb.laplace.fit`,
whose module, `keras_bayes.laplace`, exports it).
"""

import math
import numbers

import numpy as np
from keras import ops

from keras_bayes import _validation
from keras_bayes._laplace_ops import to_float64 as _numpy
from keras_bayes.laplace import (
    DEFAULT_LINK_SAMPLES,
    GRID,
    LINKS,
    _batches,
    _choice,
    _compute_dtype,
    _num_examples,
    _prior_precision,
)


def _log_marginal(groups, log_likelihood, precisions):
    """Laplace log marginal likelihood for one precision per group.

    `log p(D | theta) - 1/2 sum_l delta_l ||theta_l||^2
     + 1/2 sum_l P_l log delta_l - 1/2 sum_l sum_i log(lambda_li + delta_l)`
    (the terms `P/2 log 2 pi` of the prior and the posterior cancel).
    """
    total = log_likelihood
    for (eig, norm), delta in zip(groups, precisions):
        total += 0.5 * (
            eig.size * math.log(delta)
            - np.sum(np.log(eig + delta))
            - delta * norm
        )
    return float(total)


def _maximise(groups):
    """The precision maximising `_log_marginal` for the pooled `groups`.

    Its derivative in `delta` is `(sum_i lambda_i / (lambda_i + delta) -
    delta ||theta||^2) / (2 delta)`: the bracket falls strictly in
    `delta`, so the maximum is its one root (MacKay's `delta = gamma /
    ||theta||^2`), found by bisection in `log delta`.
    """
    eig = np.concatenate([g[0] for g in groups])
    norm = sum(g[1] for g in groups)

    def slope(log_delta):
        delta = math.exp(log_delta)
        return float(np.sum(eig / (eig + delta))) - delta * norm

    low, high = math.log(1e-12), math.log(1e12)
    if slope(low) <= 0:
        return math.exp(low)
    if slope(high) >= 0:
        return math.exp(high)
    for _ in range(200):
        middle = 0.5 * (low + high)
        if slope(middle) > 0:
            low = middle
        else:
            high = middle
        if high - low < 1e-14:
            break
    return math.exp(0.5 * (low + high))


class Laplace:
    """A fitted Laplace approximation (made by `kb.laplace.fit`).

    Attributes:
        prior_precision: the prior precision in use (a float, or one per
            layer as a NumPy array with `prior_structure="layerwise"`).
            Setting it updates the posterior.
        likelihood, subset, hessian: as given to `fit`.
        num_examples: `N`, the training examples.
        noise_variance: regression only: the fitted `sigma^2` (None for
            classification).
        log_likelihood: `log p(D | theta_MAP)`.
        kron_factors: `hessian="kron"`: `(A, G)`, float64 arrays, with the
            GGN approximated by `A (x) G / N`.
        ggn: `hessian="full"`: the `(P, P)` GGN; `"diag"`: its diagonal,
            shaped like the weights (`(D', C)` for the last layer: the
            kernel's rows, then the bias).
        model: the trained model (the MAP), unchanged.
    """

    def __init__(
        self, curvature, likelihood, subset, hessian, structure, batch_size
    ):
        self._curvature = curvature
        self.likelihood = likelihood
        self.subset = subset
        self.hessian = hessian
        self.prior_structure = structure
        self.batch_size = batch_size
        self.model = curvature.head.model
        self.num_examples = curvature.num_examples
        self.noise_variance = curvature.noise_variance
        self.log_likelihood = curvature.log_likelihood
        self.kron_factors = getattr(curvature, "factors", None)
        self.ggn = getattr(curvature, "ggn", None)
        self._precision = None

    @property
    def prior_precision(self):
        return self._precision

    @prior_precision.setter
    def prior_precision(self, value):
        self._precision = self._check_precision(value)
        self._curvature.set_precision(self._precision)

    def _check_precision(self, value):
        groups = self._curvature.num_groups
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return _validation.number(value, "prior_precision", 0, strict=True)
        array = _prior_precision(value)
        if isinstance(array, str) or array.size != groups:
            raise _validation.invalid(
                "prior_precision",
                f"Expected a finite, strictly positive number or {groups} "
                "of them (one per layer).",
                _validation.summary(value),
            )
        return array

    def _precisions(self, value):
        groups = self._curvature.num_groups
        return np.broadcast_to(np.asarray(value, "float64"), (groups,))

    def log_marginal_likelihood(self, prior_precision=None):
        """The Laplace log marginal likelihood `log p(D)`.

        `log p(D | theta) - 1/2 delta ||theta||^2 + 1/2 P log delta
        - 1/2 log det(H + delta I)`, with `H` the GGN (its Kronecker
        approximation with `hessian="kron"`: the eigenvalues of
        `A (x) G / N + delta I` are `a_i g_j / N + delta`, exact for any
        `delta`); per layer, a sum of such terms.

        Args:
            prior_precision: the precision (or one per layer); None for
                `self.prior_precision`.
        """
        if prior_precision is None:
            prior_precision = self._precision
        else:
            prior_precision = self._check_precision(prior_precision)
        return _log_marginal(
            self._curvature.eigenvalues(),
            self.log_likelihood,
            self._precisions(prior_precision),
        )

    def optimal_prior_precision(self):
        """The prior precision maximising `log_marginal_likelihood`: one
        number, or one per layer with `prior_structure="layerwise"`."""
        groups = self._curvature.eigenvalues()
        if self.prior_structure == "scalar" or len(groups) == 1:
            return _maximise(groups)
        return np.array([_maximise([group]) for group in groups])

    def _gridsearch(self, x_val, y_val):
        scores = []
        for delta in GRID:
            self.prior_precision = delta
            scores.append(self._nll(x_val, y_val))
        return GRID[int(np.nanargmin(scores))]

    def _nll(self, x, y):
        if self.likelihood == "classification":
            probs = self.predict(x)
            picked = probs[np.arange(len(y)), y]
            return float(-np.mean(np.log(np.maximum(picked, 1e-300))))
        mean, variance = self.predict(x)
        return float(
            np.mean(
                0.5 * np.log(2 * math.pi * variance)
                + 0.5 * (y - mean) ** 2 / variance
            )
        )

    def posterior_variances(self):
        """`{layer name: {variable path: (loc, variance)}}`: the posterior
        mean (the trained weights) and the exact marginal variances of
        every weight covered, NumPy float64 arrays shaped like the
        weights."""
        return self._curvature.posterior_variances()

    def predict(
        self, x, link=None, num_samples=None, seed=None, batch_size=None
    ):
        """The posterior predictive.

        Classification returns class probabilities `(N, classes)`:

        - `link=None` or `"probit"` (no `num_samples`): the GLM predictive
          (the logits linearised at the MAP: mean `f(x)`, covariance
          `J Sigma J^T`) with the probit approximation
          `softmax(f / sqrt(1 + pi/8 var))`, closed form, no sampling.
        - `link="mc"`: the same Gaussian over the logits, averaged over
          `num_samples` draws (default 100) of the softmax.
        - `num_samples=S` with `link=None`: Monte Carlo over weights: `S`
          posterior weight draws, each run through the network, the
          softmax averaged.

        Regression returns `(mean, variance)`, each `(N, outputs)`: the
        predictive of the target, `variance` including the fitted noise
        `sigma^2` (`self.noise_variance`). `link="probit"` and
        `link="mc"` both give the GLM's closed form; `num_samples=S`
        the moments of `S` weight draws plus `sigma^2`.

        Args:
            x: inputs: an array, or a list or dict of arrays.
            link: None, `"probit"` or `"mc"`.
            num_samples: number of Monte Carlo draws (see above).
            seed: int seed of the draws (NumPy), or None.
            batch_size: examples per batch. Defaults to `fit`'s.
        """
        if link is not None:
            link = _choice(link, "link", LINKS)
            if link == "probit" and num_samples is not None:
                raise _validation.invalid(
                    "num_samples",
                    'link="probit" is closed form: expected None (use '
                    'link="mc" to sample the logits, or link=None to sample '
                    "the weights).",
                    num_samples,
                )
        if num_samples is not None:
            num_samples = _validation.positive_int(num_samples, "num_samples")
        seed = _validation.seed(seed)
        batch_size = (
            self.batch_size
            if batch_size is None
            else _validation.positive_int(batch_size, "batch_size")
        )
        n = _num_examples(x)
        rng = np.random.default_rng(seed)
        dtype = _compute_dtype()
        if link is None and num_samples is None:
            link = "probit"
        if link == "mc" and num_samples is None:
            num_samples = DEFAULT_LINK_SAMPLES
        samples = None
        if link is None:
            samples = self._curvature.weight_samples(num_samples, rng)
        results = [
            self._predict_batch(xb, link, num_samples, samples, rng, dtype)
            for _, _, xb in _batches(x, n, batch_size)
        ]
        if self.likelihood == "regression":
            return tuple(
                np.concatenate([r[i] for r in results]) for i in (0, 1)
            )
        return np.concatenate(results)

    def _predict_batch(self, xb, link, num_samples, samples, rng, dtype):
        curvature = self._curvature
        regression = self.likelihood == "regression"
        if link is None:  # Monte Carlo over weights
            outputs = curvature.sample_outputs(xb, dtype, samples)
            if regression:
                mean = ops.mean(outputs, axis=0)
                variance = ops.var(outputs, axis=0) + self.noise_variance
                return _numpy(mean), _numpy(variance)
            return _numpy(ops.mean(ops.softmax(outputs, axis=-1), axis=0))
        full = link == "mc" and not regression
        mean, cov = curvature.logits_moments(xb, dtype, full)
        if regression:
            return _numpy(mean), _numpy(cov + self.noise_variance)
        if link == "probit":
            scaled = mean / ops.sqrt(1.0 + math.pi / 8.0 * cov)
            return _numpy(ops.softmax(scaled, axis=-1))
        mean, cov = _numpy(mean), _numpy(cov)
        # Cholesky of each example's logit covariance (jittered: a softmax
        # GGN is singular along the all-ones direction).
        classes = cov.shape[-1]
        jitter = 1e-10 * (np.trace(cov, axis1=1, axis2=2)[:, None, None] + 1)
        root = np.linalg.cholesky(cov + jitter * np.eye(classes))
        z = rng.standard_normal((num_samples,) + mean.shape)
        logits = mean + np.einsum("nce,sne->snc", root, z)
        logits -= logits.max(axis=-1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=-1, keepdims=True)
        return probs.mean(axis=0)

    def to_bayesian_model(
        self, covariance=None, estimator="reparameterization"
    ):
        """A new model holding this posterior in keras-bayes layers.

        The covered layers (the last `Dense`, or every convertible layer
        with `subset="all"`) become keras-bayes layers through
        `kb.to_bayesian(..., layers=[...])`, with `MeanFieldNormal`
        posteriors for the kernels and the biases: mean the trained
        weights, standard deviation the square root of the Laplace
        marginal variances (set through `PosteriorWeight.assign`). Their
        priors are the Laplace prior `N(0, 1 / sqrt(delta))` (per layer
        with layerwise precisions) and their `kl_weight` is `1 / N`, so
        that fine-tuning minimises the per-example negative ELBO. The
        layers sample in every call (`posterior_value="sample"`):
        `kb.uncertainty.mc_predict` draws from the posterior, and
        `kb.set_posterior_value(model, "mean")` gives back the trained
        model's outputs. The trained model is not changed.

        A mean-field posterior holds no correlations: with `hessian="kron"`
        or `"full"`, pass `covariance="diagonal"` to keep the exact
        marginal variances of the posterior and drop its correlations
        (otherwise a `ValueError` says so). The Monte Carlo predictive of
        the new model then differs from `predict(x, num_samples=S)`,
        which samples the correlated posterior.

        Args:
            covariance: None, or `"diagonal"` (needed for `"kron"` and
                `"full"`).
            estimator: `"reparameterization"` (default) or `"flipout"`.

        Returns:
            A new Keras model (Sequential or Functional, as `model`).
        """
        from keras_bayes import _laplace_model

        return _laplace_model.to_bayesian_model(self, covariance, estimator)
