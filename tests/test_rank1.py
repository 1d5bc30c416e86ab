"""Rank-1 Bayesian layers (`ConvNDRank1`, `ConvNDTransposeRank1`,
`DenseRank1`).

- mean mode: member `b` is `f(x * alpha_loc[b], kernel) * gamma_loc[b] +
  bias[b]`, with `f` the matching `keras.layers` layer, for inputs shared
  by the members and for one input per member;
- sample mode: per-example outputs have the exact mean and variance of
  `s * f(x * r, W) + b` with independent normal `r` and `s` (a float64
  NumPy reference), and identical examples in a batch are uncorrelated;
- the KL is the closed form over alpha and gamma, summed over members;
- the shared kernel has no member axes and takes Keras' initializer,
  regularizer and constraint;
- the shared layer checks and the argument errors.
"""

import functools

import keras
import numpy as np
import pytest
from keras import ops

import keras_bayes as kb
from tests.helpers import MOMENT_Z, assert_sample_moments
from tests.helpers import randomize_rank1 as _randomize
from tests.keras_support import skip_unless_keras_runs
from tests.layer_test import run_layer_test
from tests.references import dense

RTOL = 1e-5
ATOL = 1e-5
RANK1_CLASSES = [
    kb.layers.Conv1DRank1,
    kb.layers.Conv2DRank1,
    kb.layers.Conv3DRank1,
    kb.layers.Conv1DTransposeRank1,
    kb.layers.Conv2DTransposeRank1,
    kb.layers.Conv3DTransposeRank1,
    kb.layers.DenseRank1,
]
IDS = [c.__name__ for c in RANK1_CLASSES]


def _to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def _scale(untransformed):
    return np.logaddexp(0.0, np.asarray(untransformed, "float64")) + 1e-5


def _inputs(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _keras_class(layer_cls):
    return getattr(keras.layers, layer_cls.__name__.removesuffix("Rank1"))


def _case(layer_cls):
    """`(kwargs, input shape)` of a small case per class (batch 3)."""
    if layer_cls is kb.layers.DenseRank1:
        return {"units": 3}, (3, 5)
    rank = layer_cls.rank
    spatial = (5, 4, 3)[:rank]
    kwargs = {"filters": 3, "kernel_size": 2}
    if "Transpose" in layer_cls.__name__:
        kwargs["strides"] = 2
    return kwargs, (3, *spatial, 2)


def _member_reference(layer_cls, kwargs, layer, x, member):
    """`f(x * alpha_loc[b], W) * gamma_loc[b] + bias[b]` with Keras' f."""
    reference = _keras_class(layer_cls)(**kwargs, use_bias=False)
    reference.build(x.shape)
    reference.set_weights([_to_numpy(layer.kernel)])
    alpha = _to_numpy(layer.alpha_loc)[member]
    gamma = _to_numpy(layer.gamma_loc)[member]
    bias = _to_numpy(layer.bias)[member]
    return _to_numpy(reference(x * alpha)) * gamma + bias


@pytest.mark.parametrize("layer_cls", RANK1_CLASSES, ids=IDS)
def test_mean_mode_is_the_rank1_formula_per_member(layer_cls):
    kwargs, shape = _case(layer_cls)
    skip_unless_keras_runs(_keras_class(layer_cls), kwargs, shape)
    layer = layer_cls(**kwargs, batch_shape=(2,), posterior_value="mean")
    layer.build(shape)
    _randomize(layer)
    keras_layer = _keras_class(layer_cls)(**kwargs)
    keras_layer.build(shape)
    assert tuple(layer.kernel.shape) == tuple(keras_layer.kernel.shape)
    x = _inputs(shape)
    x_members = _inputs(shape[:1] + (2,) + shape[1:], seed=1)
    shared, per_member = _to_numpy(layer(x)), _to_numpy(layer(x_members))
    for member in range(2):
        np.testing.assert_allclose(
            shared[:, member],
            _member_reference(layer_cls, kwargs, layer, x, member),
            rtol=RTOL,
            atol=ATOL,
        )
        np.testing.assert_allclose(
            per_member[:, member],
            _member_reference(
                layer_cls, kwargs, layer, x_members[:, member], member
            ),
            rtol=RTOL,
            atol=ATOL,
        )
    assert not np.allclose(shared[:, 0], shared[:, 1])
    # Mean mode draws nothing: the same output again.
    np.testing.assert_array_equal(_to_numpy(layer(x)), shared)


def test_kernel_is_shared_and_a_keras_point_estimate():
    layer = kb.layers.Conv2DRank1(
        4,
        3,
        batch_shape=(3,),
        kernel_initializer=keras.initializers.Constant(0.5),
        kernel_regularizer=keras.regularizers.L2(0.1),
        kernel_constraint=keras.constraints.MaxNorm(1.0, axis=[0, 1, 2]),
    )
    layer.build((2, 6, 6, 2))
    kernel = _to_numpy(layer.kernel)
    assert kernel.shape == (3, 3, 2, 4)
    np.testing.assert_array_equal(kernel, np.full((3, 3, 2, 4), 0.5))
    assert tuple(layer.bias.shape) == (3, 4)
    assert tuple(layer.alpha_loc.shape) == (3, 2)
    assert tuple(layer.gamma_untransformed_scale.shape) == (3, 4)
    # The regularizer is Keras': 0.1 * sum(w ** 2) next to the KL.
    layer(_inputs((2, 6, 6, 2)))
    regularization = float(_to_numpy(layer.losses[-1]))
    np.testing.assert_allclose(regularization, 0.1 * np.sum(kernel**2), 1e-6)
    assert layer.kernel.constraint is not None


# -- sample mode statistics -------------------------------------------------

NUM_CALLS = 1000
Z = MOMENT_Z  # standard errors allowed


def _channel_parts(layer_cls, kwargs, kernel, x):
    """`A[..., c, o]`: the output of `f` from input channel `c` alone.

    `f(x * r, W)` is `sum_c r_c A[..., c, :]`, computed with Keras' layer
    on one input channel at a time (the others zeroed).
    """
    reference = _keras_class(layer_cls)(**kwargs, use_bias=False)
    reference.build(x.shape)
    reference.set_weights([kernel])
    parts = []
    for c in range(x.shape[-1]):
        mask = np.zeros(x.shape[-1], "float32")
        mask[c] = 1.0
        parts.append(_to_numpy(reference(x * mask)).astype("float64"))
    return np.stack(parts, axis=-2)


@functools.cache
def _draws(layer_cls):
    kwargs, shape = _case(layer_cls)
    layer = layer_cls(**kwargs, seed=11)
    model = keras.Sequential([keras.Input(shape[1:]), layer])
    _randomize(layer, seed=3)
    rng = np.random.default_rng(4)
    x0, x1 = rng.normal(size=(2,) + shape[1:]).astype("float32")
    x = np.stack([x0, x0, x1])
    tiled = np.tile(x, (NUM_CALLS,) + (1,) * (len(shape) - 1))
    outputs = model.predict(tiled, batch_size=3, verbose=0)
    return layer, x, outputs.reshape((NUM_CALLS, 3) + outputs.shape[1:])


def _reference_moments(layer_cls, layer, x):
    """Mean and variance of `s * z + b`, `z = sum_c r_c A_c`, with
    independent `r_c ~ N(a_c, sa_c**2)` and `s ~ N(g, sg**2)`:
    `E = g E[z] + b`, `Var = (g**2 + sg**2) (E[z]**2 + Var z) - g**2
    E[z]**2` with `E[z] = sum a_c A_c`, `Var z = sum sa_c**2 A_c**2`."""
    kwargs, _ = _case(layer_cls)
    parts = _channel_parts(layer_cls, kwargs, _to_numpy(layer.kernel), x)
    a = _to_numpy(layer.alpha_loc).astype("float64")
    sa = _scale(_to_numpy(layer.alpha_untransformed_scale))
    g = _to_numpy(layer.gamma_loc).astype("float64")
    sg = _scale(_to_numpy(layer.gamma_untransformed_scale))
    bias = _to_numpy(layer.bias).astype("float64")
    mean_z = np.einsum("...co,c->...o", parts, a)
    var_z = np.einsum("...co,c->...o", parts**2, sa**2)
    mean = g * mean_z + bias
    variance = (g**2 + sg**2) * (mean_z**2 + var_z) - g**2 * mean_z**2
    return mean, variance


@pytest.mark.slow
@pytest.mark.parametrize("layer_cls", RANK1_CLASSES, ids=IDS)
def test_output_mean_and_variance(layer_cls):
    kwargs, shape = _case(layer_cls)
    skip_unless_keras_runs(_keras_class(layer_cls), kwargs, shape)
    layer, x, outputs = _draws(layer_cls)
    mean, variance = _reference_moments(layer_cls, layer, x)
    assert outputs.shape[1:] == mean.shape
    # Products of normals: not normal.
    assert_sample_moments(outputs, mean, variance, normal=False)


@pytest.mark.slow
@pytest.mark.parametrize("layer_cls", RANK1_CLASSES, ids=IDS)
def test_identical_examples_get_uncorrelated_draws(layer_cls):
    kwargs, shape = _case(layer_cls)
    skip_unless_keras_runs(_keras_class(layer_cls), kwargs, shape)
    layer, x, outputs = _draws(layer_cls)
    mean, _ = _reference_moments(layer_cls, layer, x)
    first = (outputs[:, 0] - mean[0]).reshape(NUM_CALLS, -1)
    second = (outputs[:, 1] - mean[1]).reshape(NUM_CALLS, -1)
    # Per-example draws are independent: zero correlation, whose sample
    # estimate has standard deviation about sqrt(E[p0**2 p1**2] / (n
    # E[p0**2] E[p1**2])) = 1 / sqrt(n) under independence; the ratio is
    # estimated from the draws.
    correlation = np.sum(first * second, axis=0) / np.sqrt(
        np.sum(first**2, axis=0) * np.sum(second**2, axis=0)
    )
    ratio = np.mean(first**2 * second**2, axis=0) / (
        np.mean(first**2, axis=0) * np.mean(second**2, axis=0)
    )
    assert np.all(np.abs(correlation) < Z * np.sqrt(ratio / NUM_CALLS))


# -- KL ----------------------------------------------------------------------


@pytest.mark.parametrize("layer_cls", RANK1_CLASSES, ids=IDS)
def test_kl_is_the_closed_form_over_the_factors(layer_cls):
    kwargs, shape = _case(layer_cls)
    prior = kb.priors.Normal(1.0, 0.3)
    layer = layer_cls(
        **kwargs,
        batch_shape=(2,),
        kl_weight=0.5,
        alpha_prior=prior,
        gamma_prior=prior,
    )
    layer.build(shape)
    _randomize(layer)
    layer(_inputs(shape))
    total = 0.0
    for name in ("alpha", "gamma"):
        loc = _to_numpy(getattr(layer, f"{name}_loc")).astype("float64")
        scale = _scale(_to_numpy(getattr(layer, f"{name}_untransformed_scale")))
        total += np.sum(
            np.log(0.3 / scale) + (scale**2 + (loc - 1.0) ** 2) / 0.18 - 0.5
        )
    (kl,) = layer.losses
    np.testing.assert_allclose(float(_to_numpy(kl)), 0.5 * total, rtol=1e-5)


def test_default_factors_are_centred_on_one():
    layer = kb.layers.DenseRank1(4, batch_shape=(8,), seed=0)
    layer.build((2, 50))
    alpha = _to_numpy(layer.alpha_loc)
    assert abs(alpha.mean() - 1.0) < 0.05 and 0.05 < alpha.std() < 0.15
    scale = _scale(_to_numpy(layer.alpha_untransformed_scale))
    np.testing.assert_allclose(scale, 0.0316, rtol=1e-3)
    assert layer.alpha_prior.get_config() == {"loc": 1.0, "scale": 0.1}


def test_random_sign_initialisation():
    posterior = kb.posteriors.FactorNormal(random_sign_init=0.5)
    layer = kb.layers.DenseRank1(
        3, batch_shape=(64,), alpha_posterior=posterior, seed=0
    )
    layer.build((2, 40))
    alpha = _to_numpy(layer.alpha_loc)
    assert set(np.unique(alpha)) == {-1.0, 1.0}
    # 2560 fair signs: the share of -1 has standard error 0.01.
    assert abs(np.mean(alpha < 0) - 0.5) < 0.05
    # Members start different from each other.
    assert not np.array_equal(alpha[0], alpha[1])


# -- shared checks and errors ------------------------------------------------


def _contract_case(layer_cls):
    if layer_cls is kb.layers.DenseRank1:
        return {"units": 3}, (4, 5), (4, 2, 3)
    rank = layer_cls.rank
    spatial = (4, 3, 3)[:rank]
    if "Transpose" in layer_cls.__name__:
        out = tuple(2 * s for s in spatial)
        kwargs = {"filters": 3, "kernel_size": 2, "strides": 2}
    else:
        out = tuple(s - 1 for s in spatial)
        kwargs = {"filters": 3, "kernel_size": 2}
    return kwargs, (2, *spatial, 2), (2, 2, *out, 3)


NAMES = [
    "kernel",
    "alpha_loc",
    "alpha_untransformed_scale",
    "gamma_loc",
    "gamma_untransformed_scale",
    "bias",
    "kl_weight",
    "posterior_sample",
]


@pytest.mark.parametrize("layer_cls", RANK1_CLASSES, ids=IDS)
def test_layer_contract(layer_cls):
    kwargs, input_shape, output_shape = _contract_case(layer_cls)
    run_layer_test(
        layer_cls,
        {**kwargs, "batch_shape": (2,)},
        input_shape,
        output_shape,
        expected_variable_names=NAMES,
    )


@pytest.mark.parametrize(
    "kwargs, argument, received",
    [
        pytest.param({"batch_shape": (0,)}, "batch_shape", "(0,)", id="bs"),
        pytest.param({"kl_weight": "x"}, "kl_weight", "'x'", id="kl"),
        pytest.param(
            {"alpha_prior": "nope"}, "alpha_prior", "'nope'", id="prior"
        ),
        pytest.param(
            {"gamma_posterior": "deterministic", "gamma_prior": None},
            None,
            None,
            id="point_gamma_without_prior_is_fine",
        ),
        pytest.param(
            {"gamma_posterior": "deterministic"},
            "gamma_prior",
            "Normal(loc=1.0, scale=0.1)",
            id="prior_on_point",
        ),
        pytest.param(
            {"posterior_value": "median"},
            "posterior_value",
            "'median'",
            id="posterior_value",
        ),
    ],
)
def test_argument_errors(kwargs, argument, received):
    if argument is None:
        kb.layers.Conv2DRank1(2, 3, **kwargs)
        return
    with pytest.raises(ValueError) as error:
        kb.layers.Conv2DRank1(2, 3, **kwargs)
    message = str(error.value)
    assert message.startswith(f"Invalid value for argument `{argument}`.")
    assert message.endswith(f"Received: {argument}={received}")


@pytest.mark.parametrize(
    "kwargs, argument, received",
    [
        pytest.param(
            {"random_sign_init": 1.5}, "random_sign_init", "1.5", id="sign"
        ),
        pytest.param({"loc_stddev": -1}, "loc_stddev", "-1", id="stddev"),
        pytest.param(
            {"initial_scale": 1e-6}, "initial_scale", "1e-06", id="scale"
        ),
    ],
)
def test_factor_posterior_errors(kwargs, argument, received):
    with pytest.raises(ValueError) as error:
        kb.posteriors.FactorNormal(**kwargs)
    message = str(error.value)
    assert message.startswith(f"Invalid value for argument `{argument}`.")
    assert message.endswith(f"Received: {argument}={received}")


def test_member_average():
    probs = keras.Sequential(
        [
            keras.Input((6,)),
            kb.layers.DenseRank1(4, batch_shape=(3,), posterior_value="mean"),
            keras.layers.Softmax(),
            kb.layers.MemberAverage(),
        ]
    )
    x = _inputs((2, 6))
    per_member = _to_numpy(keras.Sequential(probs.layers[:2])(x))
    np.testing.assert_allclose(
        _to_numpy(probs(x)), per_member.mean(axis=1), rtol=1e-6
    )
    with pytest.raises(ValueError, match="expected ndim >= 3"):
        kb.layers.MemberAverage().compute_output_shape((2, 4))


@pytest.mark.parametrize("mode", ["sample", "mean"])
def test_point_estimate_factor_runs_in_both_modes(mode):
    # gamma as a point estimate (no prior): each member's outputs are
    # `dense(x * r, kernel) * gamma_loc + bias`, with r drawn in sample
    # mode. With a tiny alpha scale the draw is r = alpha_loc up to 1e-4,
    # so both modes match the numpy formula at the posterior means.
    layer = kb.layers.DenseRank1(
        3,
        batch_shape=(2,),
        gamma_posterior="deterministic",
        gamma_prior=None,
        posterior_value=mode,
    )
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    layer.build(x.shape)
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(4, 3)).astype("float32")
    alpha = rng.normal(1.0, 0.2, size=(2, 4)).astype("float32")
    gamma = rng.normal(1.0, 0.2, size=(2, 3)).astype("float32")
    bias = rng.normal(size=(2, 3)).astype("float32")
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)
    layer.posterior_weight("alpha").assign(alpha, np.full((2, 4), 1e-8))
    layer.posterior_weight("gamma").assign(gamma)
    outputs = ops.convert_to_numpy(layer(x))
    expected = np.stack(
        [dense(x * alpha[b], kernel) * gamma[b] + bias[b] for b in range(2)],
        axis=1,
    )
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)
