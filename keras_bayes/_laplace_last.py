"""`kb.laplace.fit(..., subset="last_layer")`: the curvature of a `Dense`
head in closed form from its input features.

Per batch (compiled where the backend compiles), the sums `sum phi phi^T`
and, by `hessian`, the softmax Hessians `sum diag(p) - p p^T` (KFAC), the
exact GGN of the head's weights (full) or its diagonal; then, in NumPy
float64, the eigendecompositions that make the marginal likelihood cheap
for any prior precision, the posterior, and the GLM predictive's logit
covariance. The public API is `keras_bayes.laplace`.
"""

import functools
import math

import keras
import numpy as np
from keras import ops

from keras_bayes import _validation
from keras_bayes._laplace_ops import compile_step as _compile
from keras_bayes._laplace_ops import matmul as _matmul
from keras_bayes.laplace import (
    MAX_FULL_PARAMETERS,
    _batches,
    _compute_dtype,
)


def _last_layer_step(likelihood, hessian, state, phi, weights, target):
    """One batch's sums added to `state = (gram, curvature, total)`:
    `sum phi phi^T`; `sum Lambda_n` (kron), the GGN `(D', C, D', C)`
    (full) or its diagonal `(D', C)`; and the log-likelihood
    (classification) or the sum of squared residuals (regression)."""
    gram, curvature, total = state
    logits = _matmul(phi, weights)
    gram = gram + _matmul(ops.transpose(phi), phi)
    if likelihood == "regression":
        residual = ops.cast(target, logits.dtype) - logits
        return gram, curvature, total + ops.sum(ops.square(residual))
    labels = ops.expand_dims(ops.cast(target, "int32"), -1)
    log_p = ops.log_softmax(logits, axis=-1)
    total = total + ops.sum(ops.take_along_axis(log_p, labels, axis=-1))
    p = ops.exp(log_p)
    dims, classes = weights.shape
    if hessian == "kron":
        curvature = (
            curvature
            + ops.diag(ops.sum(p, axis=0))
            - _matmul(ops.transpose(p), p)
        )
    elif hessian == "full":
        # sum_n phi_d phi_f (p_c delta_ce - p_c p_e)
        outer = ops.reshape(
            ops.expand_dims(phi, 2) * ops.expand_dims(p, 1),
            (-1, dims * classes),
        )
        weighted = ops.reshape(
            _matmul(ops.transpose(outer), phi), (dims, classes, dims, 1)
        )
        eye = ops.reshape(
            ops.eye(classes, dtype=phi.dtype), (1, classes, 1, classes)
        )
        curvature = (
            curvature
            + weighted * eye
            - ops.reshape(
                _matmul(ops.transpose(outer), outer),
                (dims, classes, dims, classes),
            )
        )
    else:
        curvature = curvature + _matmul(
            ops.transpose(ops.square(phi)), p - ops.square(p)
        )
    return gram, curvature, total


# Compiled once per process and kind, so that a later fit reuses the
# compiled code (for the same batch shapes).
_STEPS = {}


def _compiled_step(likelihood, hessian):
    key = (keras.backend.backend(), likelihood, hessian)
    if key not in _STEPS:
        _STEPS[key] = _compile(
            functools.partial(_last_layer_step, likelihood, hessian)
        )
    return _STEPS[key]


class _LastLayer:
    """The GGN of the last `Dense` layer's kernel and bias, in closed form.

    The weights are the `(D', C)` matrix `W` (kernel with the bias as its
    last row; `D' = D + 1` with a bias), flattened row-major: parameter
    `(d, c)` multiplies feature `d` into logit `c`. The logits' Jacobian
    is `J_n = phi_n^T (x) I_C`, so the GGN is
    `sum_n (phi_n phi_n^T) (x) Lambda_n`.
    """

    num_groups = 1

    def __init__(self, head, likelihood, hessian):
        self.head = head
        self.likelihood = likelihood
        self.hessian = hessian
        self.theta = head.weights()
        self.num_parameters = self.theta.size
        if hessian == "full" and self.num_parameters > MAX_FULL_PARAMETERS:
            raise _validation.invalid(
                "hessian",
                f'hessian="full" stores a square matrix of every parameter: '
                f"the last layer has {self.num_parameters}, more than "
                f'{MAX_FULL_PARAMETERS}. Use hessian="kron" or "diag".',
                hessian,
            )

    def accumulate(self, x, y, n, batch_size):
        dtype = _compute_dtype()
        dims, classes = self.theta.shape
        weights = ops.convert_to_tensor(self.theta, dtype=dtype)
        shape = {
            "kron": (classes, classes),
            "full": (dims, classes, dims, classes),
            "diag": (dims, classes),
        }[self.hessian]
        if self.likelihood == "regression":
            shape = ()  # every curvature follows from `gram`
        state = (
            ops.zeros((dims, dims), dtype=dtype),
            ops.zeros(shape, dtype=dtype),
            ops.zeros((), dtype=dtype),
        )
        step = _compiled_step(self.likelihood, self.hessian)
        for start, stop, xb in _batches(x, n, batch_size):
            phi = self.head.phi(xb, dtype)
            state = step(
                state, phi, weights, ops.convert_to_tensor(y[start:stop])
            )
        gram, curvature, total = state
        softmax_sum = full = diag = curvature
        self.num_examples = n
        gram = ops.convert_to_numpy(gram).astype("float64")
        total = float(ops.convert_to_numpy(total))
        if self.likelihood == "regression":
            noise = total / (n * classes)
            if not noise > 0:
                raise _validation.invalid(
                    "y",
                    "The model fits the targets exactly: the noise variance "
                    "cannot be estimated.",
                    _validation.summary(y),
                )
            self.noise_variance = noise
            self.log_likelihood = (
                -0.5 * n * classes * (math.log(2 * math.pi * noise) + 1)
            )
            # Lambda_n = I / sigma^2 for every example.
            softmax_sum = n * np.eye(classes) / noise
            full = np.kron(gram, np.eye(classes) / noise).reshape(
                dims, classes, dims, classes
            )
            diag = np.outer(np.diag(gram), np.ones(classes)) / noise
        else:
            self.noise_variance = None
            self.log_likelihood = total
            softmax_sum = ops.convert_to_numpy(softmax_sum).astype("float64")
            full = ops.convert_to_numpy(full).astype("float64")
            diag = ops.convert_to_numpy(diag).astype("float64")
        self._set_curvature(gram, softmax_sum, full, diag)

    def _set_curvature(self, gram, softmax_sum, full, diag):
        dims, classes = self.theta.shape
        if self.hessian == "kron":
            self.factors = (gram, softmax_sum)
            a, self._u_a = np.linalg.eigh(gram)
            g, self._u_g = np.linalg.eigh(softmax_sum)
            a, g = np.maximum(a, 0), np.maximum(g, 0)
            self._eig = np.outer(a, g) / self.num_examples
            self.ggn = None
        elif self.hessian == "full":
            matrix = full.reshape(dims * classes, dims * classes)
            self.ggn = 0.5 * (matrix + matrix.T)
            eig, self._u = np.linalg.eigh(self.ggn)
            self._eig = np.maximum(eig, 0)
        else:
            self.ggn = diag
            self._eig = diag

    # -- the posterior for a prior precision -----------------------------

    def eigenvalues(self):
        """`[(eigenvalues of the layer's GGN, ||theta||^2)]`."""
        return [(self._eig.ravel(), float(np.sum(self.theta**2)))]

    def set_precision(self, precision):
        delta = float(np.ravel(precision)[0])
        self._delta = delta
        inverse = 1.0 / (self._eig + delta)
        if self.hessian == "kron":
            self._kron_scale = inverse  # (D', C)
            self.variance = (self._u_a**2) @ inverse @ (self._u_g**2).T
        elif self.hessian == "full":
            self.covariance = (self._u * inverse) @ self._u.T
            self.variance = np.diag(self.covariance).reshape(self.theta.shape)
        else:
            self.variance = inverse

    def posterior_variances(self):
        """`{variable path: (loc, variance)}` of the kernel and bias."""
        layer = self.head.layer
        dims = layer.kernel.shape[0]
        result = {layer.kernel.path: (self.theta[:dims], self.variance[:dims])}
        if self.head.use_bias:
            result[layer.bias.path] = (self.theta[dims], self.variance[dims])
        return {layer.name: result}

    # -- predictive ------------------------------------------------------

    def logits_moments(self, x, dtype, full_covariance):
        """Mean `(n, C)` and variance `(n, C)` (or covariance
        `(n, C, C)`) of the logits of a batch under the GLM."""
        phi = self.head.phi(x, dtype)
        weights = ops.convert_to_tensor(self.theta, dtype=dtype)
        mean = _matmul(phi, weights)
        if self.hessian == "kron":
            u_a = ops.convert_to_tensor(self._u_a, dtype=dtype)
            u_g = ops.convert_to_tensor(self._u_g, dtype=dtype)
            scale = ops.convert_to_tensor(self._kron_scale, dtype=dtype)
            s = _matmul(ops.square(_matmul(phi, u_a)), scale)
            if full_covariance:
                cov = _matmul(u_g[None] * s[:, None, :], ops.transpose(u_g))
            else:
                cov = _matmul(s, ops.transpose(ops.square(u_g)))
        elif self.hessian == "full":
            dims, classes = self.theta.shape
            sigma = ops.convert_to_tensor(
                self.covariance.reshape(dims, classes, dims, classes), dtype
            )
            left = ops.reshape(
                _matmul(phi, ops.reshape(sigma, (dims, -1))),
                (-1, classes, dims, classes),
            )
            cov = ops.einsum("ncfe,nf->nce", left, phi)
            if not full_covariance:
                cov = ops.diagonal(cov, axis1=1, axis2=2)
        else:
            variance = ops.convert_to_tensor(self.variance, dtype=dtype)
            cov = _matmul(ops.square(phi), variance)
            if full_covariance:
                cov = cov[:, :, None] * ops.eye(
                    self.theta.shape[1], dtype=dtype
                )
        return mean, cov

    def sample_outputs(self, x, dtype, samples):
        """Logits `(S, n, C)` under the weight draws `samples`."""
        phi = self.head.phi(x, dtype)
        samples = ops.convert_to_tensor(samples, dtype=dtype)
        return ops.einsum("nd,sdc->snc", phi, samples)

    def weight_samples(self, num_samples, rng):
        """`num_samples` posterior draws of `W`, `(S, D', C)`."""
        dims, classes = self.theta.shape
        z = rng.standard_normal((num_samples, dims, classes))
        if self.hessian == "kron":
            noise = self._u_a @ (z * np.sqrt(self._kron_scale)) @ self._u_g.T
        elif self.hessian == "full":
            root = self._u * np.sqrt(1.0 / (self._eig + self._delta))
            noise = (z.reshape(num_samples, -1) @ root.T).reshape(z.shape)
        else:
            noise = z * np.sqrt(self.variance)
        return self.theta + noise
