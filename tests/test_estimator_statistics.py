"""The three estimators draw outputs from the right distribution.

For a mean-field normal kernel posterior `N(loc, scale**2)` and inputs `x`,
every estimator gives each output element a normal marginal with

    mean     = conv(x, loc) + bias
    variance = conv(x**2, scale**2)  (+ bias_scale**2 for a stochastic bias)

(for Flipout because the signs square to one), for convolutions,
transposed convolutions and dense layers alike, and per member for a
`batch_shape`. The references are computed in float64 NumPy
(`tests/references.py`) from the variable values. The estimators differ in
how draws are shared: one kernel per call for reparameterization (identical
examples get identical outputs), uncorrelated perturbations across examples
for Flipout and local reparameterization, which is what makes Flipout's
gradient variance fall like 1 / batch size (Wen et al. 2018).
"""

import functools

import keras
import numpy as np
import pytest

import keras_bayes as kb
from tests import references
from tests.helpers import (
    MOMENT_Z,
    assert_sample_moments,
    assign_posterior,
    normal_inputs,
    to_numpy,
)
from tests.keras_support import skip_unless_keras_runs
from tests.layer_test import (
    BAYES_CONV,
    TRANSPOSE_CLASSES,
    keras_counterpart,
)

# Independent calls per statistic. Each check below allows 5 standard errors
# (a two-sided normal tail of 5.7e-7 per element; at most a few hundred
# elements per case keeps the chance of a false failure for a different
# seed below 1e-3).
NUM_CALLS = 1000
Z = MOMENT_Z  # standard errors allowed
# Posterior values: scales varying per weight in (0.2, 1), so that a
# misplaced scale (wrong axis, wrong weight) changes the variances.
LOC_STD = 0.5
SCALE_RANGE = (-1.5, 0.5)

# `(layer class, kwargs, input shape without batch, strides, dilation)`.
# Strides and dilation go to the NumPy reference; None means a dense
# layer. With a `batch_shape`, an input shape with one axis more than a
# member's carries one input per member; otherwise every member gets the
# same input.
CASES = {
    "conv1d_reparameterization_strides2": (
        kb.layers.Conv1DReparameterization,
        {"filters": 2, "kernel_size": 3, "strides": 2},
        (7, 2),
        (2,),
        (1,),
    ),
    "conv2d_flipout_dilation2": (
        kb.layers.Conv2DFlipout,
        {"filters": 2, "kernel_size": 2, "dilation_rate": 2},
        (4, 3, 2),
        (1, 1),
        (2, 2),
    ),
    "conv3d_flipout": (
        kb.layers.Conv3DFlipout,
        {"filters": 2, "kernel_size": 2},
        (3, 2, 2, 2),
        (1, 1, 1),
        (1, 1, 1),
    ),
    "conv1d_transpose_reparameterization_strides2": (
        kb.layers.Conv1DTransposeReparameterization,
        {"filters": 2, "kernel_size": 3, "strides": 2},
        (4, 2),
        (2,),
        (1,),
    ),
    "conv2d_transpose_flipout_dilation2": (
        kb.layers.Conv2DTransposeFlipout,
        {"filters": 2, "kernel_size": 2, "dilation_rate": 2},
        (3, 2, 2),
        (1, 1),
        (2, 2),
    ),
    "conv3d_transpose_flipout_strides2": (
        kb.layers.Conv3DTransposeFlipout,
        {"filters": 2, "kernel_size": 2, "strides": 2},
        (2, 1, 2, 2),
        (2, 2, 2),
        (1, 1, 1),
    ),
    # Two members, one input for both: each member's outputs follow its own
    # posterior, with Flipout signs per member.
    "conv2d_transpose_flipout_two_members": (
        kb.layers.Conv2DTransposeFlipout,
        {"filters": 2, "kernel_size": 2, "strides": 2, "batch_shape": (2,)},
        (2, 2, 2),
        (2, 2),
        (1, 1),
    ),
    # Two members with an input each.
    "conv1d_transpose_reparameterization_member_inputs": (
        kb.layers.Conv1DTransposeReparameterization,
        {"filters": 2, "kernel_size": 3, "strides": 2, "batch_shape": (2,)},
        (2, 3, 2),
        (2,),
        (1,),
    ),
    "dense_reparameterization_stochastic_bias": (
        kb.layers.DenseReparameterization,
        {"units": 3, "bias_posterior": "mean_field_normal"},
        (4,),
        None,
        None,
    ),
    "dense_flipout": (
        kb.layers.DenseFlipout,
        {"units": 3},
        (4,),
        None,
        None,
    ),
    "dense_local_reparameterization": (
        kb.layers.DenseLocalReparameterization,
        {"units": 3},
        (4,),
        None,
        None,
    ),
}


REPARAMETERIZATION_CLASSES = tuple(
    classes[0] for classes in BAYES_CONV.values()
) + (kb.layers.DenseReparameterization,)


def _member_inputs(case_id):
    """Whether the case's inputs carry one input per member."""
    _, kwargs, feature_shape, strides, _ = CASES[case_id]
    member_rank = 1 if strides is None else len(strides) + 1
    return "batch_shape" in kwargs and len(feature_shape) > member_rank


def _skip_unless_keras_runs(case_id):
    layer_cls, kwargs, feature_shape, _, _ = CASES[case_id]
    member_shape = (
        feature_shape[1:] if _member_inputs(case_id) else feature_shape
    )
    skip_unless_keras_runs(
        keras_counterpart(layer_cls), kwargs, (3,) + member_shape
    )


@functools.cache
def _draws(case_id):
    """`NUM_CALLS` outputs of one layer on a batch `[x0, x0, x1]`.

    Rows 0 and 1 are the same example (for the duplicate checks); all three
    rows are used for the moments. `predict` over `NUM_CALLS` copies of the
    batch with `batch_size=3` makes one layer call per copy, each with a new
    draw. Cached so that the moment and duplicate tests share one run; the
    layer seed is fixed so the draws do not depend on test order.
    """
    layer_cls, kwargs, feature_shape, _, _ = CASES[case_id]
    layer = layer_cls(**kwargs, seed=1234)
    model = keras.Sequential([keras.Input(shape=feature_shape), layer])
    values = assign_posterior(
        layer, seed=5, loc_std=LOC_STD, scale_range=SCALE_RANGE
    )
    rng = np.random.default_rng(6)
    x0, x1 = rng.normal(size=(2,) + feature_shape).astype("float32")
    x = np.stack([x0, x0, x1])
    tiled = np.tile(x, (NUM_CALLS,) + (1,) * len(feature_shape))
    outputs = model.predict(tiled, batch_size=3, verbose=0)
    outputs = outputs.reshape((NUM_CALLS, 3) + outputs.shape[1:])
    return x, values, outputs


def _linear_map(case_id, x, kernel):
    """The case's map (dense, convolution or transposed) of `x`, float64."""
    layer_cls, _, _, strides, dilation = CASES[case_id]
    if strides is None:
        return references.dense(x, kernel)
    if layer_cls in TRANSPOSE_CLASSES:
        return references.conv_transpose(x, kernel, strides, dilation)
    return references.conv(x, kernel, strides, dilation)


def _member_moments(case_id, x, loc, variance_kernel, bias, bias_variance):
    x = np.asarray(x, "float64")
    mean = _linear_map(case_id, x, loc) + bias
    variance = _linear_map(case_id, x**2, variance_kernel) + bias_variance
    return mean, variance


def _reference_moments(case_id, x, values):
    kwargs = CASES[case_id][1]
    loc = values["kernel_loc"]
    variance_kernel = (
        references.posterior_scale(values["kernel_untransformed_scale"]) ** 2
    )
    bias = values["bias_loc"]
    bias_variance = 0.0
    if "bias_untransformed_scale" in values:
        bias_variance = (
            references.posterior_scale(values["bias_untransformed_scale"]) ** 2
        )
    if "batch_shape" not in kwargs:
        return _member_moments(
            case_id, x, loc, variance_kernel, bias, bias_variance
        )
    member_inputs = _member_inputs(case_id)
    means, variances = [], []
    for member in range(kwargs["batch_shape"][0]):
        mean, variance = _member_moments(
            case_id,
            x[:, member] if member_inputs else x,
            loc[member],
            variance_kernel[member],
            bias[member],
            bias_variance[member] if np.ndim(bias_variance) else 0.0,
        )
        means.append(mean)
        variances.append(variance)
    return np.stack(means, axis=1), np.stack(variances, axis=1)


@pytest.mark.slow
@pytest.mark.parametrize("case_id", list(CASES))
def test_output_mean_and_variance(case_id):
    _skip_unless_keras_runs(case_id)
    x, values, outputs = _draws(case_id)
    mean, variance = _reference_moments(case_id, x, values)
    assert outputs.shape[1:] == mean.shape
    n = NUM_CALLS

    # Calls are independent and each marginal is normal.
    assert_sample_moments(outputs, mean, variance, normal=True)

    # A sharper check of the same moments, pooled over all elements: the
    # per-call averages of the standardized residuals z and z**2 are i.i.d.
    # across calls, with expectations 0 and 1; their standard errors are
    # estimated from the calls themselves.
    z = (outputs - mean) / np.sqrt(variance)
    for statistic, expected in ((z, 0.0), (z**2, 1.0)):
        per_call = statistic.reshape(n, -1).mean(axis=1)
        error = per_call.std(ddof=1) / np.sqrt(n)
        assert abs(per_call.mean() - expected) < Z * error, (
            per_call.mean(),
            expected,
            error,
        )


@pytest.mark.slow
@pytest.mark.parametrize("case_id", list(CASES))
def test_identical_examples_in_one_batch(case_id):
    layer_cls = CASES[case_id][0]
    _skip_unless_keras_runs(case_id)
    x, values, outputs = _draws(case_id)
    if issubclass(layer_cls, REPARAMETERIZATION_CLASSES):
        # One kernel per call: the two copies see the same weights.
        np.testing.assert_array_equal(outputs[:, 0], outputs[:, 1])
        return
    mean, _ = _reference_moments(case_id, x, values)
    first = (outputs[:, 0] - mean[0]).reshape(NUM_CALLS, -1)
    second = (outputs[:, 1] - mean[1]).reshape(NUM_CALLS, -1)
    assert not np.allclose(first, second)
    correlation = np.sum(first * second, axis=0) / np.sqrt(
        np.sum(first**2, axis=0) * np.sum(second**2, axis=0)
    )
    # Under zero correlation the sample correlation has standard deviation
    # sqrt(E[p0**2 p1**2] / (n sigma**4)). Local reparameterization draws
    # the two independently (ratio 1). Flipout shares the kernel noise: with
    # p_i = s_i * sum_c s_ic A_c (A_c the part of channel c, variance v_c),
    # E[p0**2 p1**2] = (sum v)**2 + 2 sum v**2 <= 3 sigma**4, hence sqrt(3).
    bound = Z * np.sqrt(3.0 / NUM_CALLS)
    assert np.max(np.abs(correlation)) < bound, correlation


def _gradient_draws(layer_cls, batch_size, num_draws, seed):
    """Independent minibatch gradients of a fixed MSE loss w.r.t. loc.

    The minibatch is one fixed example repeated `batch_size` times, so only
    the weight noise varies between draws. Each draw is one SGD step with
    learning rate 1 from the same weights: the step is minus the gradient.
    """
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 6, 2)).astype("float32")
    target = rng.normal(size=(1, 4, 2)).astype("float32")
    layer = layer_cls(2, 3, use_bias=False, kernel_prior=None, seed=seed)
    model = keras.Sequential([keras.Input(shape=(6, 2)), layer])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss="mse")
    loc = rng.normal(0.0, 0.5, size=(3, 2, 2)).astype("float32")
    layer.kernel_loc.assign(loc)
    layer.kernel_untransformed_scale.assign(np.full((3, 2, 2), -0.5, "float32"))
    start = [to_numpy(v) for v in model.trainable_weights]
    xs = np.repeat(x, batch_size, axis=0)
    targets = np.repeat(target, batch_size, axis=0)
    gradients = []
    for _ in range(num_draws):
        model.train_on_batch(xs, targets)
        gradients.append(loc - to_numpy(layer.kernel_loc))
        # Back to the same weights (the scale took a step as well).
        for variable, value in zip(model.trainable_weights, start):
            variable.assign(value)
    return np.stack(gradients)


def _total_variance(gradients):
    return np.sum(np.var(gradients, axis=0, ddof=1))


@pytest.mark.slow
def test_flipout_gradient_variance_falls_with_batch_size():
    # For this loss the gradient w.r.t. kernel_loc is linear in the outputs,
    # so its noise is the batch mean of the per-example perturbations.
    # Flipout's are uncorrelated: variance ~ 1/batch, a ratio of 32 between
    # batch 1 and 32. Reparameterization's are identical copies: ratio 1.
    # Each variance estimate from 100 draws has a relative standard error
    # of about sqrt(2 / 99) ~ 0.14 (a normal gradient; summing 12 entries
    # only helps), so a ratio of two is within about 0.2 of its value: the
    # thresholds 12 (3/8 of 32) and [0.5, 2] sit 4-5 standard errors away
    # while telling 1/batch from flat apart.
    num_draws = 100
    ratios = {}
    for layer_cls in (
        kb.layers.Conv1DFlipout,
        kb.layers.Conv1DReparameterization,
    ):
        # Different layer seeds: the two estimates are independent.
        small = _total_variance(_gradient_draws(layer_cls, 1, num_draws, 1))
        large = _total_variance(_gradient_draws(layer_cls, 32, num_draws, 2))
        assert small > 0 and large > 0
        ratios[layer_cls.__name__] = small / large
    assert ratios["Conv1DFlipout"] > 12.0, ratios
    assert 0.5 < ratios["Conv1DReparameterization"] < 2.0, ratios


SEEDING_CASES = [
    (kb.layers.Conv2DReparameterization, {"filters": 2, "kernel_size": 2}),
    (kb.layers.Conv2DFlipout, {"filters": 2, "kernel_size": 2}),
    (kb.layers.DenseLocalReparameterization, {"units": 2}),
]
SEEDING_IDS = [case[0].__name__ for case in SEEDING_CASES]


def _seeding_pair(layer_cls, kwargs, seeds):
    """Two layers with the given seeds and identical weights, and inputs."""
    rank = 2 if "filters" in kwargs else 0
    shape = (3,) + (4,) * rank + (2,)
    x = normal_inputs(shape)
    layers = [layer_cls(**kwargs, seed=seed) for seed in seeds]
    for layer in layers:
        layer.build(x.shape)
        assign_posterior(
            layer, seed=2, loc_std=LOC_STD, scale_range=SCALE_RANGE
        )
    return layers, x


@pytest.mark.parametrize("layer_cls, kwargs", SEEDING_CASES, ids=SEEDING_IDS)
def test_new_draw_on_every_call(layer_cls, kwargs):
    (layer,), x = _seeding_pair(layer_cls, kwargs, [None])
    first, second = to_numpy(layer(x)), to_numpy(layer(x))
    assert not np.allclose(first, second)


@pytest.mark.parametrize("layer_cls, kwargs", SEEDING_CASES, ids=SEEDING_IDS)
def test_unseeded_layers_draw_different_noise(layer_cls, kwargs):
    layers, x = _seeding_pair(layer_cls, kwargs, [None, None])
    outputs = [to_numpy(layer(x)) for layer in layers]
    assert not np.allclose(outputs[0], outputs[1])


@pytest.mark.parametrize("layer_cls, kwargs", SEEDING_CASES, ids=SEEDING_IDS)
def test_same_int_seed_and_weights_draw_the_same_noise(layer_cls, kwargs):
    layers, x = _seeding_pair(layer_cls, kwargs, [7, 7, 8])
    # Same seed: the same sequence of draws, call after call.
    for _ in range(2):
        outputs = [to_numpy(layer(x)) for layer in layers]
        np.testing.assert_array_equal(outputs[0], outputs[1])
        assert not np.allclose(outputs[0], outputs[2])
