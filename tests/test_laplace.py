"""`kb.laplace` against the NumPy reference in `tests/laplace_reference.py`.

Tolerances: the model runs in float32 on every backend (the features and
logits come from it), and the curvature sums run in float64 where the
backend computes in it (TensorFlow, PyTorch; JAX without x64 stays in
float32). The reference recomputes everything in float64 from the same
float32 weights, so the only differences are float32 roundings of the
features and sums over 50 examples: relative 1e-5 holds with room.
"""

import math

import keras
import numpy as np
import pytest

import keras_bayes as kb
from tests import laplace_reference as ref

RTOL = 1e-5
CLASSES = 3


def _mlp(activation="relu", head="softmax", outputs=CLASSES, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(6, activation=activation),
            keras.layers.Dense(outputs, activation=head),
        ]
    )
    # Scale the weights up a little so the probabilities are not uniform.
    for variable in model.weights:
        variable.assign(1.5 * keras.ops.convert_to_numpy(variable) + 0.1)
    return model


def _data(n=50, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = rng.integers(0, CLASSES, size=n)
    return x, y


def _weights(model):
    return [
        keras.ops.convert_to_numpy(v).astype("float64") for v in model.weights
    ]


def _reference(model, x, y):
    weights = _weights(model)
    _, h, logits = ref.forward(weights, x.astype("float64"), "relu")
    jac = ref.last_layer_jacobians(h, CLASSES)
    lambdas = ref.softmax_hessians(logits)
    theta = np.concatenate([weights[2], weights[3][None]], axis=0)
    return {
        "h": h,
        "logits": logits,
        "jac": jac,
        "lambdas": lambdas,
        "theta": theta.ravel(),
        "ggn": ref.ggn(jac, lambdas),
        "loglik": ref.log_likelihood(logits, y),
    }


@pytest.fixture(scope="module")
def problem():
    model = _mlp()
    x, y = _data()
    return model, x, y, _reference(model, x, y)


def _kron_matrix(r, n):
    phi = np.concatenate([r["h"], np.ones((len(r["h"]), 1))], axis=1)
    a = phi.T @ phi
    g = r["lambdas"].sum(axis=0)
    return a, g, np.kron(a, g) / n


@pytest.mark.parametrize("hessian", ["kron", "full", "diag"])
def test_last_layer_curvature_matches_reference(problem, hessian):
    model, x, y, r = problem
    la = kb.laplace.fit(model, x, y, hessian=hessian, prior_precision=1.0)
    np.testing.assert_allclose(la.log_likelihood, r["loglik"], rtol=RTOL)
    if hessian == "kron":
        a, g, _ = _kron_matrix(r, len(x))
        np.testing.assert_allclose(la.kron_factors[0], a, rtol=RTOL, atol=1e-9)
        np.testing.assert_allclose(la.kron_factors[1], g, rtol=RTOL, atol=1e-9)
    elif hessian == "full":
        scale = np.abs(r["ggn"]).max()
        np.testing.assert_allclose(
            la.ggn, r["ggn"], rtol=RTOL, atol=1e-7 * scale
        )
    else:
        np.testing.assert_allclose(
            la.ggn.ravel(), np.diag(r["ggn"]), rtol=RTOL, atol=1e-9
        )


def _precision_matrix(r, hessian, n):
    if hessian == "kron":
        return _kron_matrix(r, n)[2]
    if hessian == "full":
        return r["ggn"]
    return np.diag(np.diag(r["ggn"]))


@pytest.mark.parametrize("hessian", ["kron", "full", "diag"])
def test_last_layer_marginal_likelihood_and_argmax(problem, hessian):
    model, x, y, r = problem
    la = kb.laplace.fit(model, x, y, hessian=hessian)
    matrix = _precision_matrix(r, hessian, len(x))

    def reference(delta):
        return ref.log_marginal(matrix, r["loglik"], r["theta"], delta)

    for delta in (0.1, 1.0, 7.5):
        np.testing.assert_allclose(
            la.log_marginal_likelihood(delta), reference(delta), rtol=RTOL
        )
    log_best = ref.golden_argmax(
        lambda t: reference(math.exp(t)), math.log(1e-4), math.log(1e4)
    )
    np.testing.assert_allclose(
        la.prior_precision, math.exp(log_best), rtol=RTOL
    )
    # The default precision is the fitted one.
    np.testing.assert_allclose(
        la.log_marginal_likelihood(), reference(la.prior_precision), rtol=RTOL
    )


@pytest.mark.parametrize("hessian", ["kron", "full", "diag"])
def test_last_layer_probit_predictive(problem, hessian):
    model, x, y, r = problem
    la = kb.laplace.fit(model, x, y, hessian=hessian, prior_precision=2.0)
    x_test, _ = _data(n=20, seed=5)
    t = _reference(model, x_test, np.zeros(20, "int64"))
    matrix = _precision_matrix(r, hessian, len(x))
    covariance = np.linalg.inv(matrix + 2.0 * np.eye(matrix.shape[0]))
    expected = ref.glm_probit(t["logits"], t["jac"], covariance)
    probs = la.predict(x_test, link="probit")
    assert probs.shape == (20, CLASSES)
    np.testing.assert_allclose(probs, expected, rtol=RTOL)
    np.testing.assert_allclose(la.predict(x_test), probs)
