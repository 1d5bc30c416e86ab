"""The KL term each layer adds with `add_loss`.

References are computed in numpy (float64) from the variable values: the
closed form of `KL(N(m, s) || N(m0, s0))` for normal priors, and a large
numpy Monte Carlo sample of `log q(w) - log p(w)` for the mixture priors.
"""

import functools
import math

import keras
import numpy as np
import pytest
from keras import ops

import keras_bayes as kb
from tests.helpers import assign_posterior, normal_inputs, to_numpy
from tests.references import (
    mixture_log_density,
    normal_kl,
    normal_log_density,
    posterior_scale,
)

# Monte Carlo checks allow 5 standard errors (two-sided tail 5.7e-7).
Z = 5.0

# Random posterior values, returned by variable name; the scales reach
# both sides of softplus' bend.
_assign_posterior = functools.partial(
    assign_posterior, loc_std=0.5, scale_range=(-2.0, 0.5)
)


def _kl_loss(layer, x):
    layer(x)
    assert len(layer.losses) == 1, layer.losses
    loss = layer.losses[0]
    assert tuple(loss.shape) == ()
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    return float(to_numpy(loss))


KERNEL_PRIOR = (0.3, 0.7)
BIAS_PRIOR = (-0.2, 1.5)
CLOSED_FORM_CASES = [
    (kb.layers.Conv2DFlipout, {"filters": 3, "kernel_size": 2}, (2, 4, 4, 2)),
    (
        kb.layers.Conv1DReparameterization,
        {"filters": 2, "kernel_size": 3},
        (2, 5, 3),
    ),
    (kb.layers.DenseLocalReparameterization, {"units": 3}, (2, 4)),
]


def _closed_form_layer(layer_cls, kwargs, bias_prior, kl_weight, value):
    return layer_cls(
        **kwargs,
        kernel_prior=kb.priors.Normal(*KERNEL_PRIOR),
        bias_posterior="mean_field_normal",
        bias_prior=bias_prior,
        kl_weight=kl_weight,
        posterior_value=value,
    )


@pytest.mark.parametrize("kl_weight", [0.0, 0.25, 1.0, 3.0])
@pytest.mark.parametrize(
    "layer_cls, kwargs, input_shape",
    CLOSED_FORM_CASES,
    ids=[case[0].__name__ for case in CLOSED_FORM_CASES],
)
def test_closed_form_kl_for_normal_priors(
    layer_cls, kwargs, input_shape, kl_weight
):
    x = normal_inputs(input_shape)
    for value in ("sample", "mean"):
        layer = _closed_form_layer(
            layer_cls,
            kwargs,
            kb.priors.Normal(*BIAS_PRIOR),
            kl_weight,
            value,
        )
        layer.build(x.shape)
        v = _assign_posterior(layer, seed=1)
        kernel_kl = normal_kl(
            v["kernel_loc"],
            posterior_scale(v["kernel_untransformed_scale"]),
            *KERNEL_PRIOR,
        )
        bias_kl = normal_kl(
            v["bias_loc"],
            posterior_scale(v["bias_untransformed_scale"]),
            *BIAS_PRIOR,
        )
        assert kernel_kl > 1.0 and bias_kl > 0.1  # both terms matter

        expected = kl_weight * (kernel_kl + bias_kl)
        # The closed form does not depend on the draw: the same every call.
        for _ in range(2):
            assert _kl_loss(layer, x) == pytest.approx(
                expected, rel=1e-5, abs=1e-6
            )
        # Changing the weight after build rescales the next call's term.
        layer.kl_weight = 2.0
        assert _kl_loss(layer, x) == pytest.approx(
            2.0 * (kernel_kl + bias_kl), rel=1e-5
        )


def _zero_data_loss(y_true, y_pred):
    # Zero with a zero gradient: the step then follows the KL alone.
    return 0.0 * ops.mean(y_pred)


@pytest.mark.parametrize(
    "layer_cls, kwargs, input_shape",
    CLOSED_FORM_CASES,
    ids=[case[0].__name__ for case in CLOSED_FORM_CASES],
)
def test_closed_form_kl_gradient(layer_cls, kwargs, input_shape):
    # The closed form's gradient is written out by hand; one SGD step of
    # learning rate 1 on the KL alone must move every parameter by its
    # analytic derivative, float64 in numpy:
    #   d/dm   = w * (m - m0) / s0**2
    #   d/du   = w * (s / s0**2 - 1 / s) * sigmoid(u),  s = softplus(u) + 1e-5
    # (w: kl_weight; u: the untransformed scale).
    kl_weight = 0.5
    x = normal_inputs(input_shape)
    layer = _closed_form_layer(
        layer_cls, kwargs, kb.priors.Normal(*BIAS_PRIOR), kl_weight, "sample"
    )
    model = keras.Sequential([keras.Input(shape=input_shape[1:]), layer])
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1.0),
        loss=_zero_data_loss,
    )
    v = _assign_posterior(layer, seed=7)
    for name in ("kernel", "bias"):
        # Include u = 0, where sigmoid(0) = 1/2 is the softplus gradient
        # that a max(u, 0)-style formula gets wrong, and both tails.
        untransformed = v[f"{name}_untransformed_scale"]
        untransformed.flat[:3] = (0.0, 3.0, -4.0)
        getattr(layer, f"{name}_untransformed_scale").assign(untransformed)
    y = np.zeros((input_shape[0],) + tuple(model.output_shape[1:]), "float32")
    model.train_on_batch(x, y)
    for name, (prior_loc, prior_scale) in (
        ("kernel", KERNEL_PRIOR),
        ("bias", BIAS_PRIOR),
    ):
        loc = v[f"{name}_loc"].astype("float64")
        untransformed = v[f"{name}_untransformed_scale"].astype("float64")
        scale = posterior_scale(untransformed)
        sigmoid = 1.0 / (1.0 + np.exp(-untransformed))
        expected = {
            "loc": kl_weight * (loc - prior_loc) / prior_scale**2,
            "untransformed_scale": kl_weight
            * (scale / prior_scale**2 - 1.0 / scale)
            * sigmoid,
        }
        for part, gradient in expected.items():
            before = v[f"{name}_{part}"]
            after = to_numpy(getattr(layer, f"{name}_{part}"))
            # Steps of order 1 on values of order 1: float32 rounding of
            # `after` and of the step is ~1e-7 each.
            np.testing.assert_allclose(
                before - after, gradient, rtol=1e-5, atol=1e-6
            )


@pytest.mark.parametrize(
    "bias_posterior", ["mean_field_normal", "deterministic"]
)
def test_no_bias_term_without_bias_prior(bias_posterior):
    x = normal_inputs((2, 4, 4, 2))
    layer = kb.layers.Conv2DReparameterization(
        3,
        2,
        kernel_prior=kb.priors.Normal(*KERNEL_PRIOR),
        bias_posterior=bias_posterior,
        bias_prior=None,
        kl_weight=0.5,
    )
    layer.build(x.shape)
    v = _assign_posterior(layer, seed=2)
    kernel_kl = normal_kl(
        v["kernel_loc"],
        posterior_scale(v["kernel_untransformed_scale"]),
        *KERNEL_PRIOR,
    )
    assert _kl_loss(layer, x) == pytest.approx(0.5 * kernel_kl, rel=1e-5)


def test_no_kernel_prior_gives_an_exact_zero():
    x = normal_inputs((2, 5, 3))
    layer = kb.layers.Conv1DFlipout(2, 3, kernel_prior=None, kl_weight=3.0)
    for _ in range(2):
        assert _kl_loss(layer, x) == 0.0


MIXTURE_PRIORS = {
    "scale_mixture_normal": (
        kb.priors.ScaleMixtureNormal(0.3, 1.0, 0.05),
        (0.3, 1.0, 0.05),
    ),
    "spike_and_slab": (kb.priors.SpikeAndSlab(), (0.5, 1.0, 2000.0)),
}


def _mixture_layer(prior, value):
    layer = kb.layers.DenseFlipout(
        2,
        kernel_prior=prior,
        bias_posterior="mean_field_normal",
        bias_prior=prior,
        posterior_value=value,
    )
    layer.build((4, 3))
    # Locations near 0 and scales near the narrow component, so that both
    # mixture components matter for the log density.
    values = _assign_posterior(
        layer, seed=3, loc_std=0.1, scale_range=(-3.5, -1.5)
    )
    return layer, values


def _mixture_reference(v, weight, scale1, scale2):
    """E_q[log q(w) - log p(w)] over all 8 weights (6 kernel, 2 bias) from
    a large numpy sample: its mean, the per-draw spread and its own
    standard error."""
    loc = np.concatenate([v["kernel_loc"].ravel(), v["bias_loc"]])
    scale = posterior_scale(
        np.concatenate(
            [
                v["kernel_untransformed_scale"].ravel(),
                v["bias_untransformed_scale"],
            ]
        )
    )
    num_reference = 200_000
    rng = np.random.default_rng(4)
    w = loc + scale * rng.standard_normal((num_reference, loc.size))
    per_draw = np.sum(
        normal_log_density(w, loc, scale)
        - mixture_log_density(w, weight, scale1, scale2),
        axis=1,
    )
    spread = per_draw.std()
    return per_draw.mean(), spread, spread / math.sqrt(num_reference)


@pytest.mark.slow
def test_monte_carlo_kl_is_unbiased_in_sample_mode():
    prior, (weight, scale1, scale2) = MIXTURE_PRIORS["scale_mixture_normal"]
    layer, v = _mixture_layer(prior, "sample")
    x = normal_inputs((4, 3))
    num_calls = 200
    estimates = np.array([_kl_loss(layer, x) for _ in range(num_calls)])
    expected, spread, reference_error = _mixture_reference(
        v, weight, scale1, scale2
    )
    # Each layer call is one independent draw of the same quantity; the
    # numpy reference adds its own (much smaller) standard error.
    error = math.hypot(spread / math.sqrt(num_calls), reference_error)
    assert abs(estimates.mean() - expected) < Z * error, (
        estimates.mean(),
        expected,
        error,
    )
    # A single-draw estimate, not a constant: its spread matches too
    # (within 25%: the sample std over 200 calls has a relative standard
    # error near 1/sqrt(2 * 200) = 5% for a near-normal sum).
    assert estimates.std() == pytest.approx(spread, rel=0.25)


@pytest.mark.parametrize("prior_id", sorted(MIXTURE_PRIORS))
def test_mean_mode_kl_of_a_mixture_is_its_expectation(prior_id, monkeypatch):
    # Mean mode draws nothing: the KL is E_q[log q - log p] by quadrature,
    # the same value on every call, equal to a large numpy sample's mean
    # within that sample's standard error (Z of them) and 1e-3 relative
    # for the quadrature and float32.
    prior, (weight, scale1, scale2) = MIXTURE_PRIORS[prior_id]
    layer, v = _mixture_layer(prior, "mean")
    x = normal_inputs((4, 3))
    for name in ("normal", "uniform", "randint", "truncated_normal"):

        def refuse(*args, name=name, **kwargs):
            raise AssertionError(f"keras.random.{name} was called")

        monkeypatch.setattr(keras.random, name, refuse)
    first, second = _kl_loss(layer, x), _kl_loss(layer, x)
    assert first == second
    expected, _, reference_error = _mixture_reference(v, weight, scale1, scale2)
    tolerance = Z * reference_error + 1e-3 * abs(expected)
    assert abs(first - expected) < tolerance, (first, expected, tolerance)


def test_monte_carlo_kl_uses_the_draw_of_the_forward_pass():
    # With identity inputs a reparameterization dense layer outputs its
    # kernel draw row by row, so the KL of that call can be recomputed from
    # the outputs.
    weight, scale1, scale2 = 0.3, 1.0, 0.05
    prior = kb.priors.ScaleMixtureNormal(weight, scale1, scale2)
    layer = kb.layers.DenseReparameterization(3, kernel_prior=prior)
    layer.build((4, 4))
    v = _assign_posterior(layer, seed=5, loc_std=0.1, scale_range=(-3.0, -2.0))
    x = np.eye(4, dtype="float32")
    for _ in range(3):
        draw = to_numpy(layer(x)).astype("float64") - v["bias_loc"]
        kl = float(to_numpy(layer.losses[0]))
        loc = v["kernel_loc"].astype("float64")
        scale = posterior_scale(v["kernel_untransformed_scale"])
        expected = np.sum(
            normal_log_density(draw, loc, scale)
            - mixture_log_density(draw, weight, scale1, scale2)
        )
        assert kl == pytest.approx(expected, rel=1e-4, abs=1e-3)


def test_fit_moves_the_posterior_to_the_prior():
    # No data loss at all: the model's only loss is the KL, so training must
    # reach the prior, where the KL is 0.
    kernel_prior, bias_prior = (0.5, 0.3), (-0.4, 0.6)
    layer = kb.layers.DenseFlipout(
        2,
        kernel_prior=kb.priors.Normal(*kernel_prior),
        bias_posterior="mean_field_normal",
        bias_prior=kb.priors.Normal(*bias_prior),
    )
    model = keras.Sequential([keras.Input(shape=(3,)), layer])
    x = normal_inputs((4, 3))
    initial_kl = _kl_loss(layer, x)
    assert initial_kl > 10.0

    schedule = keras.optimizers.schedules.ExponentialDecay(0.05, 100, 0.5)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=None)
    history = model.fit(
        np.zeros((600, 3), "float32"), batch_size=1, epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][-1])

    for name, (prior_loc, prior_scale) in (
        ("kernel", kernel_prior),
        ("bias", bias_prior),
    ):
        loc = to_numpy(getattr(layer, f"{name}_loc"))
        scale = posterior_scale(
            to_numpy(getattr(layer, f"{name}_untransformed_scale"))
        )
        # Adam with a decaying step settles to ~1e-6 of the optimum here.
        np.testing.assert_allclose(loc, prior_loc, atol=1e-3)
        np.testing.assert_allclose(scale, prior_scale, atol=1e-3)
    assert _kl_loss(layer, x) < 1e-5


def test_kl_is_float32_under_mixed_precision():
    x = normal_inputs((2, 5, 5, 4))
    layers = {}
    for policy in ("mixed_float16", "float32"):
        layer = kb.layers.Conv2DFlipout(8, 3, dtype=policy)
        layer.build(x.shape)
        layers[policy] = layer
        v = _assign_posterior(layer, seed=6, loc_std=1.0)
    mixed, full = layers["mixed_float16"], layers["float32"]
    assert keras.backend.standardize_dtype(mixed(x).dtype) == "float16"

    loc = v["kernel_loc"]
    scale = posterior_scale(v["kernel_untransformed_scale"])
    expected = normal_kl(loc, scale, 0.0, 1.0)
    kl_mixed, kl_full = _kl_loss(mixed, x), _kl_loss(full, x)
    # float32 sums of a few hundred terms are exact to ~1e-7 relative;
    # rounding the parameters to float16 alone moves this sum by 5e-5 to
    # 4e-4 relative.
    assert kl_mixed == pytest.approx(expected, rel=1e-5)
    assert kl_mixed == pytest.approx(kl_full, rel=1e-6)
    # The Monte Carlo KL of a mixture prior is float32 as well.
    layer = kb.layers.Conv2DFlipout(
        8, 3, kernel_prior="scale_mixture_normal", dtype="mixed_float16"
    )
    assert np.isfinite(_kl_loss(layer, x))


@pytest.mark.parametrize("scale", [1e-5, 2e-5, 1e-3, 0.05, 1.0, 40.0])
def test_inverse_scale_gives_back_the_scale(scale):
    untransformed = kb.posteriors.MeanFieldNormal.inverse_scale([scale])
    assert untransformed.dtype == np.float32
    # The documented transform, in float64, of the float32 result.
    recovered = posterior_scale(untransformed)
    np.testing.assert_allclose(recovered, [scale], rtol=1e-6)
