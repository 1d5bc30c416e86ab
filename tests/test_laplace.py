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


def test_linear_head_is_the_same_posterior(problem):
    model, x, y, _ = problem
    logits_model = _mlp(head=None)
    logits_model.set_weights(model.get_weights())
    for hessian in ("kron", "full"):
        a = kb.laplace.fit(model, x, y, hessian=hessian)
        b = kb.laplace.fit(logits_model, x, y, hessian=hessian)
        np.testing.assert_allclose(a.prior_precision, b.prior_precision)
        np.testing.assert_allclose(a.predict(x), b.predict(x), rtol=1e-6)


def test_map_is_unchanged(problem):
    model, x, y, _ = problem
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.weights]
    outputs = model.predict(x, verbose=0)
    la = kb.laplace.fit(
        model,
        x,
        y,
        hessian="kron",
        prior_precision="gridsearch",
        validation_data=(x[:20], y[:20]),
    )
    la.predict(x, num_samples=3, seed=0)
    la.predict(x, link="mc", num_samples=3, seed=0)
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(new))
    np.testing.assert_array_equal(model.predict(x, verbose=0), outputs)
    assert la.model is model


def test_gridsearch_picks_the_grid_point_with_lowest_validation_nll(problem):
    model, x, y, _ = problem
    x_val, y_val = _data(n=30, seed=7)
    la = kb.laplace.fit(
        model,
        x,
        y,
        prior_precision="gridsearch",
        validation_data=(x_val, y_val),
    )
    assert la.prior_precision in kb.laplace.GRID

    def nll(delta):
        la.prior_precision = delta
        probs = la.predict(x_val)
        return -np.mean(np.log(probs[np.arange(30), y_val]))

    scores = [nll(delta) for delta in kb.laplace.GRID]
    assert kb.laplace.GRID[int(np.argmin(scores))] == pytest.approx(
        min(kb.laplace.GRID, key=lambda d: scores[kb.laplace.GRID.index(d)])
    )


@pytest.mark.parametrize("hessian", ["kron", "full", "diag"])
def test_monte_carlo_predictives_agree_with_the_glm(problem, hessian):
    """The logits are linear in the last layer's weights, so sampling the
    weights and sampling the GLM's logits draw the same distribution: two
    estimates of 4000 draws each agree to Monte Carlo error (the
    probabilities' standard deviation is below 0.5, so their standard
    error is below 0.008; 0.04 is five of them)."""
    model, x, y, _ = problem
    la = kb.laplace.fit(model, x, y, hessian=hessian, prior_precision=0.5)
    weights = la.predict(x[:10], num_samples=4000, seed=1)
    logits = la.predict(x[:10], link="mc", num_samples=4000, seed=2)
    assert weights.shape == logits.shape == (10, CLASSES)
    np.testing.assert_allclose(weights.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(weights, logits, atol=0.04)


def _regression_problem():
    model = _mlp(head=None, outputs=2)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 8)).astype("float32")
    y = model.predict(x, verbose=0) + rng.normal(size=(40, 2))
    return model, x, y


@pytest.mark.parametrize("hessian", ["kron", "full", "diag"])
def test_regression_noise_and_predictive(hessian):
    model, x, y = _regression_problem()
    la = kb.laplace.fit(model, x, y, likelihood="regression", hessian=hessian)
    weights = _weights(model)
    _, h, outputs = ref.forward(weights, x.astype("float64"), "relu")
    noise = np.mean((y - outputs) ** 2)
    np.testing.assert_allclose(la.noise_variance, noise, rtol=RTOL)
    loglik = np.sum(
        -0.5 * np.log(2 * np.pi * noise) - 0.5 * (y - outputs) ** 2 / noise
    )
    np.testing.assert_allclose(la.log_likelihood, loglik, rtol=RTOL)
    jac = ref.last_layer_jacobians(h, 2)
    ggn = ref.ggn(jac, np.broadcast_to(np.eye(2) / noise, (40, 2, 2)))
    if hessian == "diag":
        ggn = np.diag(np.diag(ggn))
    theta = np.concatenate([weights[2], weights[3][None]]).ravel()
    best = math.exp(
        ref.golden_argmax(
            lambda t: ref.log_marginal(ggn, loglik, theta, math.exp(t)),
            math.log(1e-4),
            math.log(1e4),
        )
    )
    np.testing.assert_allclose(la.prior_precision, best, rtol=RTOL)
    covariance = np.linalg.inv(ggn + best * np.eye(ggn.shape[0]))
    mean, variance = la.predict(x[:7])
    cov = np.einsum("ncp,pq,neq->nce", jac[:7], covariance, jac[:7])
    np.testing.assert_allclose(mean, outputs[:7], rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(
        variance, np.einsum("ncc->nc", cov) + noise, rtol=RTOL
    )
    # The outputs are linear in the weights: Monte Carlo over weights has
    # the same moments. 20000 draws: the variance's relative standard
    # error is sqrt(2 / 20000) = 1%; 5% is five of them.
    mc_mean, mc_variance = la.predict(x[:7], num_samples=20000, seed=0)
    np.testing.assert_allclose(mc_variance - noise, variance - noise, rtol=0.05)
    np.testing.assert_allclose(
        mc_mean, mean, atol=5 * np.sqrt((variance - noise).max() / 20000)
    )


# -- bad input ----------------------------------------------------------


def _message(name, expected, value):
    return (
        f"Invalid value for argument `{name}`. {expected} "
        f"Received: {name}={value!r}"
    )


def _conv_model():
    return keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3)])


@pytest.mark.parametrize(
    "kwargs, name, value, expected",
    [
        pytest.param(
            {"likelihood": "poisson"},
            "likelihood",
            "poisson",
            'Expected one of "classification", "regression".',
            id="likelihood",
        ),
        pytest.param(
            {"subset": "head"},
            "subset",
            "head",
            'Expected one of "last_layer", "all".',
            id="subset",
        ),
        pytest.param(
            {"hessian": "lowrank"},
            "hessian",
            "lowrank",
            'Expected one of "kron", "full", "diag".',
            id="hessian",
        ),
        pytest.param(
            {"subset": "all", "hessian": "kron"},
            "hessian",
            "kron",
            'subset="all" supports only hessian="diag" (a diagonal GGN over '
            "every layer).",
            id="all-kron",
        ),
        pytest.param(
            {"prior_precision": 0.0},
            "prior_precision",
            0.0,
            "Expected a finite, strictly positive number.",
            id="precision-zero",
        ),
        pytest.param(
            {"prior_precision": -1},
            "prior_precision",
            -1,
            "Expected a finite, strictly positive number.",
            id="precision-negative",
        ),
        pytest.param(
            {"prior_precision": float("inf")},
            "prior_precision",
            float("inf"),
            "Expected a finite, strictly positive number.",
            id="precision-inf",
        ),
        pytest.param(
            {"prior_precision": "evidence"},
            "prior_precision",
            "evidence",
            'Expected one of "marglik", "gridsearch".',
            id="precision-name",
        ),
        pytest.param(
            {"prior_precision": "gridsearch"},
            "validation_data",
            None,
            'prior_precision="gridsearch" needs validation data '
            "`(x_val, y_val)`.",
            id="gridsearch-no-validation",
        ),
        pytest.param(
            {"batch_size": 0},
            "batch_size",
            0,
            "Expected a strictly positive integer.",
            id="batch-size",
        ),
    ],
)
def test_bad_arguments(problem, kwargs, name, value, expected):
    model, x, y, _ = problem
    before = model.get_weights()
    with pytest.raises(ValueError) as info:
        kb.laplace.fit(model, x, y, **kwargs)
    assert str(info.value) == _message(name, expected, value)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize(
    "labels",
    [
        pytest.param(np.full(50, 3), id="out-of-range"),
        pytest.param(np.full(50, -1), id="negative"),
        pytest.param(np.zeros((50, 3)), id="one-hot"),
        pytest.param(np.zeros(49, "int64"), id="wrong-count"),
        pytest.param(np.full(50, 0.5), id="fractional"),
    ],
)
def test_bad_labels(problem, labels):
    model, x, _, _ = problem
    with pytest.raises(ValueError) as info:
        kb.laplace.fit(model, x, labels)
    expected = (
        "Invalid value for argument `y`. Expected 50 integer class labels "
        "in [0, 2], of shape (50,) or (50, 1)."
    )
    assert str(info.value).startswith(expected + " Received: y=")


def test_model_without_dense_head():
    model = _conv_model()
    x = np.zeros((4, 6, 6, 1), "float32")
    with pytest.raises(ValueError) as info:
        kb.laplace.fit(model, x, np.zeros(4, "int64"))
    assert str(info.value) == _message(
        "subset",
        "The Laplace approximation needs a model whose single output is a "
        "`keras.layers.Dense` layer (softmax or linear activation); the "
        f"last layer of '{model.name}' is Conv2D.",
        "last_layer",
    )


def test_softmax_head_for_regression(problem):
    model, x, _, _ = problem
    with pytest.raises(ValueError) as info:
        kb.laplace.fit(model, x, np.zeros((50, 3)), likelihood="regression")
    assert str(info.value) == _message(
        "likelihood",
        f"The last layer '{model.layers[-1].name}' applies a softmax: "
        'expected "classification".',
        "regression",
    )


def test_full_hessian_size_limit():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((700,)), keras.layers.Dense(8, activation="softmax")]
    )
    x = np.zeros((2, 700), "float32")
    with pytest.raises(ValueError) as info:
        kb.laplace.fit(model, x, np.zeros(2, "int64"), hessian="full")
    assert str(info.value) == _message(
        "hessian",
        'hessian="full" stores a square matrix of every parameter: the last '
        'layer has 5608, more than 5000. Use hessian="kron" or "diag".',
        "full",
    )


def test_bad_predict_arguments(problem):
    model, x, y, _ = problem
    la = kb.laplace.fit(model, x, y, prior_precision=1.0)
    with pytest.raises(ValueError) as info:
        la.predict(x, link="logit")
    assert str(info.value) == _message(
        "link", 'Expected one of "probit", "mc".', "logit"
    )
    with pytest.raises(ValueError) as info:
        la.predict(x, link="probit", num_samples=10)
    assert str(info.value).startswith("Invalid value for argument `num_")
    with pytest.raises(ValueError) as info:
        la.prior_precision = -2.0
    assert str(info.value) == _message(
        "prior_precision", "Expected a finite, strictly positive number.", -2.0
    )
    assert la.prior_precision == 1.0


# -- subset="all" -------------------------------------------------------


@pytest.fixture(scope="module")
def all_layers():
    model = _mlp(activation="tanh")
    x, y = _data(n=30, seed=11)
    weights = _weights(model)
    x64 = x.astype("float64")
    _, _, logits = ref.forward(weights, x64, "tanh")
    lambdas = ref.softmax_hessians(logits)
    jacobians = ref.all_layer_jacobians(weights, x64, "tanh")
    diagonal = [ref.ggn_diagonal(j, lambdas) for j in jacobians]
    return model, x, y, weights, diagonal, ref.log_likelihood(logits, y)


def test_all_layers_ggn_diagonal_matches_reference(all_layers):
    model, x, y, weights, diagonal, loglik = all_layers
    la = kb.laplace.fit(
        model,
        x,
        y,
        subset="all",
        hessian="diag",
        prior_structure="layerwise",
        batch_size=16,
    )
    assert list(la.ggn) == [v.path for v in model.weights]
    for variable, expected in zip(model.weights, diagonal):
        np.testing.assert_allclose(
            la.ggn[variable.path], expected, rtol=RTOL, atol=1e-9
        )
    np.testing.assert_allclose(la.log_likelihood, loglik, rtol=RTOL)
    # One precision per layer, each maximising the marginal likelihood of
    # the diagonal posterior.
    flat = np.concatenate([d.ravel() for d in diagonal])
    theta = np.concatenate([w.ravel() for w in weights])
    sizes = [w.size for w in weights]
    layer_of = np.repeat([0, 0, 1, 1], sizes)

    def reference(deltas):
        prior = np.asarray(deltas)[layer_of]
        return ref.log_marginal_prior(np.diag(flat), prior, loglik, theta)

    best = []
    for layer in (0, 1):

        def along(t, layer=layer):
            deltas = [1.0, 1.0]
            deltas[layer] = math.exp(t)
            return reference(deltas)

        best.append(
            math.exp(ref.golden_argmax(along, math.log(1e-4), math.log(1e4)))
        )
    np.testing.assert_allclose(la.prior_precision, best, rtol=RTOL)
    np.testing.assert_allclose(
        la.log_marginal_likelihood([0.5, 3.0]),
        reference([0.5, 3.0]),
        rtol=RTOL,
    )


def test_all_layers_probit_predictive_matches_reference(all_layers):
    model, x, y, weights, diagonal, _ = all_layers
    la = kb.laplace.fit(
        model, x, y, subset="all", hessian="diag", prior_precision=2.0
    )
    x_test = _data(n=7, seed=13)[0].astype("float64")
    _, _, logits = ref.forward(weights, x_test, "tanh")
    jacobians = ref.all_layer_jacobians(weights, x_test, "tanh")
    flat_jac = np.concatenate([j.reshape(7, CLASSES, -1) for j in jacobians], 2)
    flat = np.concatenate([d.ravel() for d in diagonal])
    covariance = np.diag(1.0 / (flat + 2.0))
    expected = ref.glm_probit(logits, flat_jac, covariance)
    np.testing.assert_allclose(
        la.predict(x_test.astype("float32")), expected, rtol=RTOL
    )
    samples = la.predict(x_test.astype("float32"), num_samples=4, seed=0)
    assert samples.shape == (7, CLASSES)
    np.testing.assert_allclose(samples.sum(axis=1), 1, rtol=1e-5)


def test_all_layers_per_layer_precision_count(all_layers):
    model, x, y, *_ = all_layers
    with pytest.raises(ValueError) as info:
        kb.laplace.fit(
            model, x, y, subset="all", hessian="diag", prior_precision=[1.0]
        )
    assert str(info.value) == _message(
        "prior_precision", "Expected one precision per layer (2).", [1.0]
    )


def test_all_layers_on_a_small_cnn_agrees_with_the_last_layer():
    """On a CNN with convolution, depthwise, separable and batch
    normalization layers, the all-layer GGN diagonal restricted to the
    head is the last-layer GGN diagonal (computed in closed form from the
    features), and every convertible layer gets its weights covered."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3, activation="relu")(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.DepthwiseConv2D(2, activation="tanh")(h)
    h = keras.layers.SeparableConv2D(4, 2, activation="relu")(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(12, 6, 6, 2)).astype("float32")
    y = rng.integers(0, CLASSES, 12)
    everything = kb.laplace.fit(
        model, x, y, subset="all", hessian="diag", batch_size=5
    )
    head = kb.laplace.fit(model, x, y, hessian="diag")
    dense = model.layers[-1]
    np.testing.assert_allclose(
        everything.ggn[dense.kernel.path], head.ggn[:-1], rtol=1e-5, atol=1e-8
    )
    np.testing.assert_allclose(
        everything.ggn[dense.bias.path], head.ggn[-1], rtol=1e-5, atol=1e-8
    )
    covered = {layer.name for layer in model.layers if layer.weights} - {
        model.layers[2].name
    }  # batch normalization
    assert set(everything.posterior_variances()) == covered
    assert len(everything.ggn) == 2 + 2 + 2 + 3


# -- to_bayesian_model --------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"hessian": "diag"}, id="last-layer-diag"),
        pytest.param({"hessian": "kron"}, id="last-layer-kron"),
        pytest.param({"subset": "all", "hessian": "diag"}, id="all"),
    ],
)
def test_to_bayesian_model_holds_the_posterior(problem, tmp_path, kwargs):
    model, x, y, _ = problem
    la = kb.laplace.fit(model, x, y, prior_structure="layerwise", **kwargs)
    covariance = "diagonal" if kwargs["hessian"] == "kron" else None
    bayesian = la.to_bayesian_model(covariance=covariance)
    variances = la.posterior_variances()
    assert list(variances) == (
        [model.layers[-1].name]
        if "subset" not in kwargs
        else [layer.name for layer in model.layers]
    )
    for name, weights in variances.items():
        layer = bayesian.get_layer(name)
        assert kb.workflows.is_bayesian(layer)
        for path, (loc, variance) in weights.items():
            weight = layer.posterior_weight(path.split("/")[-1])
            mean, scale = weight.moments()
            np.testing.assert_allclose(mean, loc, rtol=1e-6)
            np.testing.assert_allclose(scale, np.sqrt(variance), rtol=1e-5)
    if kwargs["hessian"] == "kron":
        # The marginal variances are the diagonal of (A (x) G / N +
        # delta I)^-1, computed explicitly here (1e-5: the factors are
        # float32 sums, as in the other Laplace checks).
        a, g = la.kron_factors
        matrix = np.kron(a, g) / la.num_examples
        covariance_matrix = np.linalg.inv(
            matrix + la.prior_precision * np.eye(len(matrix))
        )
        ((kernel, bias),) = [variances[model.layers[-1].name].values()]
        both = np.concatenate([kernel[1], bias[1][None]])
        np.testing.assert_allclose(
            both.ravel(), np.diag(covariance_matrix), rtol=1e-5
        )


def test_to_bayesian_model_samples_saves_and_converts_back(problem, tmp_path):
    model, x, y, _ = problem
    la = kb.laplace.fit(model, x, y, subset="all", hessian="diag")
    bayesian = la.to_bayesian_model(estimator="flipout")
    samples = kb.uncertainty.mc_predict(bayesian, x[:5], 3, verbose=0)
    assert samples.shape == (3, 5, CLASSES)
    assert not np.allclose(samples[0], samples[1])
    path = str(tmp_path / "laplace.keras")
    bayesian.save(path)
    loaded = keras.models.load_model(path)
    for m in (bayesian, loaded):
        kb.set_posterior_value(m, "mean")
        np.testing.assert_allclose(
            m.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
        )
    deterministic = kb.to_deterministic(loaded)
    np.testing.assert_allclose(
        deterministic.predict(x, verbose=0),
        model.predict(x, verbose=0),
        atol=1e-6,
    )


def test_to_bayesian_model_refuses_correlations(problem):
    model, x, y, _ = problem
    la = kb.laplace.fit(model, x, y, hessian="full")
    with pytest.raises(ValueError) as info:
        la.to_bayesian_model()
    assert str(info.value) == _message(
        "covariance",
        'The posterior of hessian="full" correlates the weights, which a '
        "`MeanFieldNormal` posterior cannot hold. Pass "
        'covariance="diagonal" to keep its exact marginal variances (the '
        "correlations dropped).",
        None,
    )


def test_all_layers_regression_matches_reference():
    model = _mlp(activation="tanh", head=None, outputs=2)
    rng = np.random.default_rng(8)
    x = rng.normal(size=(20, 8)).astype("float32")
    y = model.predict(x, verbose=0) + rng.normal(size=(20, 2))
    la = kb.laplace.fit(
        model, x, y, likelihood="regression", subset="all", hessian="diag"
    )
    weights = _weights(model)
    x64 = x.astype("float64")
    _, _, outputs = ref.forward(weights, x64, "tanh")
    noise = np.mean((y - outputs) ** 2)
    np.testing.assert_allclose(la.noise_variance, noise, rtol=RTOL)
    lambdas = np.broadcast_to(np.eye(2) / noise, (20, 2, 2))
    jacobians = ref.all_layer_jacobians(weights, x64, "tanh")
    for variable, jac in zip(model.weights, jacobians):
        np.testing.assert_allclose(
            la.ggn[variable.path],
            ref.ggn_diagonal(jac, lambdas),
            rtol=RTOL,
            atol=1e-9,
        )
    mean, variance = la.predict(x[:5])
    flat = np.concatenate([j[:5].reshape(5, 2, -1) for j in jacobians], 2)
    diagonal = np.concatenate([la.ggn[v.path].ravel() for v in model.weights])
    covariance = np.diag(1.0 / (diagonal + la.prior_precision))
    cov = np.einsum("ncp,pq,neq->nce", flat, covariance, flat)
    np.testing.assert_allclose(mean, outputs[:5], rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(
        variance, np.einsum("ncc->nc", cov) + noise, rtol=RTOL
    )
