"""NumPy float64 reference of the Laplace approximation, for tests.

Written from the definitions, independently of `keras_bayes.laplace`: the
GGN is assembled from explicit per-example Jacobians of the logits of a
two-layer perceptron `f(x) = act(x W1 + b1) W2 + b2`, the log marginal
likelihood from `slogdet` of the explicit posterior precision, its argmax
by golden-section search, and the predictive from the explicit covariance.
"""

import math

import numpy as np

ACTIVATIONS = {
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float)),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
}


def forward(weights, x, activation):
    w1, b1, w2, b2 = weights
    act, _ = ACTIVATIONS[activation]
    z1 = x @ w1 + b1
    h = act(z1)
    return z1, h, h @ w2 + b2


def softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def last_layer_jacobians(h, classes):
    """Per-example Jacobians `(N, C, (D + 1) C)`: `df_c / dW[d, e] =
    phi_d [c == e]`, the bias as feature `D` (always 1)."""
    n, d = h.shape
    phi = np.concatenate([h, np.ones((n, 1))], axis=1)
    jac = np.zeros((n, classes, d + 1, classes))
    for c in range(classes):
        jac[:, c, :, c] = phi
    return jac.reshape(n, classes, -1)


def all_layer_jacobians(weights, x, activation):
    """Per-example Jacobians of the logits in `(W1, b1, W2, b2)`, each
    `(N, C, *shape)`, by the chain rule."""
    w1, b1, w2, b2 = weights
    _, deriv = ACTIVATIONS[activation]
    z1, h, _ = forward(weights, x, activation)
    n, classes = x.shape[0], w2.shape[1]
    eye = np.eye(classes)
    d_w2 = h[:, None, :, None] * eye[None, :, None, :]  # (N, C, H, C)
    d_b2 = np.broadcast_to(eye, (n, classes, classes))
    # df_c / dz1_j = W2[j, c] act'(z1_j)
    d_z1 = w2.T[None, :, :] * deriv(z1)[:, None, :]  # (N, C, H)
    d_w1 = x[:, None, :, None] * d_z1[:, :, None, :]  # (N, C, In, H)
    return [d_w1, d_z1, d_w2, d_b2]


def softmax_hessians(logits):
    """`Lambda_n = diag(p_n) - p_n p_n^T`, `(N, C, C)`."""
    p = softmax(logits)
    return np.einsum("nc,ce->nce", p, np.eye(p.shape[1])) - np.einsum(
        "nc,ne->nce", p, p
    )


def ggn(jacobians, lambdas):
    """`sum_n J_n^T Lambda_n J_n` from `(N, C, P)` Jacobians."""
    return np.einsum("ncp,nce,neq->pq", jacobians, lambdas, jacobians)


def ggn_diagonal(jacobians, lambdas):
    """The diagonal of `sum_n J_n^T Lambda_n J_n`, shaped like the
    weights, for `(N, C, *shape)` Jacobians."""
    n, c = jacobians.shape[:2]
    flat = jacobians.reshape(n, c, -1)
    diag = np.einsum("ncp,nce,nep->p", flat, lambdas, flat)
    return diag.reshape(jacobians.shape[2:])


def log_likelihood(logits, y):
    p = softmax(logits)
    return float(np.sum(np.log(p[np.arange(len(y)), y])))


def log_marginal(precision_matrix, log_lik, theta, delta):
    """`log p(D|theta) - delta/2 |theta|^2 + P/2 log delta
    - 1/2 log det(H + delta I)`."""
    p = theta.size
    sign, logdet = np.linalg.slogdet(precision_matrix + delta * np.eye(p))
    assert sign > 0
    return float(
        log_lik
        - 0.5 * delta * np.sum(theta**2)
        + 0.5 * p * math.log(delta)
        - 0.5 * logdet
    )


def log_marginal_prior(ggn_matrix, prior, log_lik, theta):
    """As `log_marginal` with the prior precision `diag(prior)`."""
    sign, logdet = np.linalg.slogdet(ggn_matrix + np.diag(prior))
    assert sign > 0
    return float(
        log_lik
        - 0.5 * np.sum(prior * theta**2)
        + 0.5 * np.sum(np.log(prior))
        - 0.5 * logdet
    )


def golden_argmax(function, low, high, tol=1e-12):
    """The argmax of a unimodal `function` on `[low, high]`."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = function(c), function(d)
    while b - a > tol:
        if fc > fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = function(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = function(d)
    return 0.5 * (a + b)


def glm_probit(logits, jacobians, covariance):
    """`softmax(f / sqrt(1 + pi/8 diag(J Sigma J^T)))`."""
    cov = np.einsum("ncp,pq,neq->nce", jacobians, covariance, jacobians)
    var = np.einsum("ncc->nc", cov)
    return softmax(logits / np.sqrt(1 + math.pi / 8 * var))
