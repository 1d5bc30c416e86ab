"""Bayesian depthwise and separable convolutions.

- mean mode equals `keras.layers.DepthwiseConvND` / `SeparableConvND` with
  the posterior means, over strides, padding, dilation, depth multiplier,
  data format, bias and activation;
- sampled outputs have the estimators' per-example marginals, against a
  float64 NumPy reference of our own; Flipout decorrelates identical
  examples at both stages;
- the KL sums the closed form over every kernel;
- members (`batch_shape`) are the Keras layer with each member's weights;
- the shared layer checks and the argument errors.
"""

import functools

import keras
import numpy as np
import pytest
from keras import ops

import keras_bayes as kb
from tests.helpers import MOMENT_Z, assert_sample_moments, assign_posterior
from tests.keras_support import skip_unless_keras_runs
from tests.layer_test import run_layer_test

RTOL = 1e-5
ATOL = 1e-5


def _to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def _scale(untransformed):
    return np.logaddexp(0.0, np.asarray(untransformed, "float64")) + 1e-5


def _inputs(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def numpy_depthwise(x, kernel, strides, dilation_rate):
    """channels_last depthwise convolution, "valid" padding, float64.

    `x`: `(N, *spatial, C)`; `kernel`: `(*kernel_size, C, M)`; output
    channel `c * M + m` sums input channel `c` times tap `kernel[..., c, m]`
    over the kernel offsets.
    """
    x = np.asarray(x, "float64")
    kernel = np.asarray(kernel, "float64")
    rank = x.ndim - 2
    kernel_size = kernel.shape[:rank]
    channels, multiplier = kernel.shape[-2:]
    out_size = [
        (x.shape[1 + i] - dilation_rate[i] * (kernel_size[i] - 1) - 1)
        // strides[i]
        + 1
        for i in range(rank)
    ]
    out = np.zeros((x.shape[0], *out_size, channels, multiplier))
    for offset in np.ndindex(*kernel_size):
        window = tuple(
            slice(
                offset[i] * dilation_rate[i],
                offset[i] * dilation_rate[i]
                + (out_size[i] - 1) * strides[i]
                + 1,
                strides[i],
            )
            for i in range(rank)
        )
        out += x[(slice(None),) + window][..., None] * kernel[offset]
    return out.reshape(out.shape[:-2] + (channels * multiplier,))


def test_numpy_depthwise_reference_by_hand():
    # Channel 0 of x = [1, 2, 3] with taps [1, 10] and multiplier 1 gives
    # [1 + 20, 2 + 30]; channel 1 (all ones) with taps [2, 3] and [1, 1]
    # (multiplier 2) gives 5 and 2 at both positions, in channel order
    # c * M + m: (0, 0), (0, 1), (1, 0), (1, 1).
    x = np.stack([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]], axis=-1)[None]
    kernel = np.zeros((2, 2, 2))
    kernel[:, 0, 0] = [1.0, 10.0]
    kernel[:, 1, 0] = [2.0, 3.0]
    kernel[:, 1, 1] = [1.0, 1.0]
    out = numpy_depthwise(x, kernel, (1,), (1,))
    np.testing.assert_array_equal(
        out[0], [[21.0, 0.0, 5.0, 2.0], [32.0, 0.0, 5.0, 2.0]]
    )
    # Dilation 2 on a length-3 input: one output, taps at 0 and 2.
    out = numpy_depthwise(x, kernel, (1,), (2,))
    np.testing.assert_array_equal(out[0, 0], [31.0, 0.0, 5.0, 2.0])


DEPTHWISE = {
    1: (
        kb.layers.DepthwiseConv1DReparameterization,
        kb.layers.DepthwiseConv1DFlipout,
    ),
    2: (
        kb.layers.DepthwiseConv2DReparameterization,
        kb.layers.DepthwiseConv2DFlipout,
    ),
}
SEPARABLE = {
    1: (
        kb.layers.SeparableConv1DReparameterization,
        kb.layers.SeparableConv1DFlipout,
    ),
    2: (
        kb.layers.SeparableConv2DReparameterization,
        kb.layers.SeparableConv2DFlipout,
    ),
}
ALL_CLASSES = [
    c for table in (DEPTHWISE, SEPARABLE) for p in table.values() for c in p
]


def _keras_class(layer_cls):
    name = layer_cls.__name__
    for suffix in ("Reparameterization", "Flipout"):
        name = name.removesuffix(suffix)
    return getattr(keras.layers, name)


# -- mean mode equals Keras -----------------------------------------------

# `(id, kwargs)` without filters; each varies one or two arguments.
GEOMETRY_CASES = [
    ("defaults", {"kernel_size": 2}),
    ("strides2_same", {"kernel_size": 3, "strides": 2, "padding": "same"}),
    ("dilation2", {"kernel_size": 2, "dilation_rate": 2}),
    (
        "multiplier3_no_bias",
        {"kernel_size": 3, "depth_multiplier": 3, "use_bias": False},
    ),
    ("relu_same", {"kernel_size": 3, "padding": "same", "activation": "relu"}),
    # Output spatial sizes differ from the channel count: there
    # `keras.ops.add` on TensorFlow would take Keras' own bias for a
    # channels_last one (the reference would be wrong, not the layer).
    (
        "channels_first",
        {
            "kernel_size": 3,
            "data_format": "channels_first",
            "depth_multiplier": 2,
        },
    ),
]
SPATIAL = (7, 6)
CHANNELS = 3


def _shape(rank, kwargs, batch=2):
    spatial = SPATIAL[:rank]
    if kwargs.get("data_format") == "channels_first":
        return (batch, CHANNELS, *spatial)
    return (batch, *spatial, CHANNELS)


def _parity_params():
    params = []
    for family, table in (("depthwise", DEPTHWISE), ("separable", SEPARABLE)):
        for rank in (1, 2):
            for i, (case_id, kwargs) in enumerate(GEOMETRY_CASES):
                layer_cls = table[rank][(i + rank) % 2]
                if family == "separable":
                    kwargs = {"filters": 3, **kwargs}
                params.append(
                    pytest.param(
                        rank,
                        layer_cls,
                        kwargs,
                        id=f"{layer_cls.__name__}-{case_id}",
                    )
                )
    return params


def _loc_weights(layer):
    """The posterior means in the order of the Keras layer's weights."""
    return [
        _to_numpy(v) for v in layer.trainable_weights if v.name.endswith("loc")
    ]


@pytest.mark.parametrize("rank, layer_cls, kwargs", _parity_params())
def test_mean_equals_keras(rank, layer_cls, kwargs):
    keras_cls = _keras_class(layer_cls)
    shape = _shape(rank, kwargs)
    skip_unless_keras_runs(keras_cls, kwargs, shape)
    x = _inputs(shape)
    layer = layer_cls(**kwargs, posterior_value="mean")
    layer.build(shape)
    assign_posterior(layer)
    reference = keras_cls(**kwargs)
    reference.build(shape)
    reference.set_weights(_loc_weights(layer))
    expected = _to_numpy(reference(x))
    if kwargs.get("data_format") == "channels_first":
        assert expected.shape[-1] != expected.shape[1], "ambiguous bias add"
    outputs = _to_numpy(layer(x))
    assert outputs.shape == expected.shape
    assert outputs.shape == tuple(layer.compute_output_shape(shape))
    np.testing.assert_allclose(outputs, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(_to_numpy(layer(x)), outputs)


# -- sampling statistics ---------------------------------------------------

NUM_CALLS = 1000
Z = MOMENT_Z  # standard errors allowed
# `(layer class, kwargs, input shape without batch, strides, dilation)`.
STATISTICS_CASES = {
    "depthwise1d_reparameterization_strides2": (
        kb.layers.DepthwiseConv1DReparameterization,
        {"kernel_size": 3, "strides": 2, "depth_multiplier": 2},
        (7, 2),
        (2,),
        (1,),
    ),
    "depthwise2d_flipout_dilation2": (
        kb.layers.DepthwiseConv2DFlipout,
        {"kernel_size": 2, "dilation_rate": 2},
        (4, 4, 3),
        (1, 1),
        (2, 2),
    ),
    "separable1d_flipout": (
        kb.layers.SeparableConv1DFlipout,
        {"filters": 3, "kernel_size": 2, "depth_multiplier": 2},
        (4, 2),
        (1,),
        (1,),
    ),
    "separable2d_reparameterization": (
        kb.layers.SeparableConv2DReparameterization,
        {"filters": 2, "kernel_size": 2},
        (3, 3, 2),
        (1, 1),
        (1, 1),
    ),
}


@functools.cache
def _draws(case_id):
    """`NUM_CALLS` outputs (one layer call each) on the batch `[x0, x0, x1]`."""
    layer_cls, kwargs, feature_shape, _, _ = STATISTICS_CASES[case_id]
    layer = layer_cls(**kwargs, seed=97)
    model = keras.Sequential([keras.Input(shape=feature_shape), layer])
    rng = np.random.default_rng(5)
    values = {}
    for variable in layer.trainable_weights:
        shape = tuple(variable.shape)
        if variable.name.endswith("untransformed_scale"):
            value = rng.uniform(-1.5, 0.5, size=shape)
        else:
            value = rng.normal(0.0, 0.5, size=shape)
        values[variable.name] = value.astype("float32")
        variable.assign(values[variable.name])
    x0, x1 = rng.normal(size=(2,) + feature_shape).astype("float32")
    x = np.stack([x0, x0, x1])
    tiled = np.tile(x, (NUM_CALLS,) + (1,) * len(feature_shape))
    outputs = model.predict(tiled, batch_size=3, verbose=0)
    return x, values, outputs.reshape((NUM_CALLS, 3) + outputs.shape[1:])


def _reference_moments(case_id, x, values):
    """Per-example mean and variance of every output, in float64.

    Depthwise: mean `dw(x, loc) + b`, variance `dw(x**2, scale**2)`.
    Separable: the pointwise stage sums, per position, depthwise outputs
    `h_j` that use disjoint weights (independent, mean `mu_j`, variance
    `v_j`) times independent pointwise weights `w_j ~ N(m_j, s_j**2)`:
    mean `sum m_j mu_j`, variance `sum s_j**2 (mu_j**2 + v_j) + m_j**2 v_j`.
    """
    _, _, _, strides, dilation = STATISTICS_CASES[case_id]
    if "kernel_loc" in values:
        loc, u = values["kernel_loc"], values["kernel_untransformed_scale"]
        mean = numpy_depthwise(x, loc, strides, dilation)
        variance = numpy_depthwise(x**2, _scale(u) ** 2, strides, dilation)
        return mean + values["bias_loc"], variance
    loc = values["depthwise_kernel_loc"]
    u = values["depthwise_kernel_untransformed_scale"]
    mu = numpy_depthwise(x, loc, strides, dilation)
    v = numpy_depthwise(x**2, _scale(u) ** 2, strides, dilation)
    m = values["pointwise_kernel_loc"].reshape(mu.shape[-1], -1)
    s2 = _scale(values["pointwise_kernel_untransformed_scale"]) ** 2
    s2 = s2.reshape(m.shape)
    mean = mu @ m + values["bias_loc"]
    variance = (mu**2 + v) @ s2 + v @ (m**2)
    return mean, variance


@pytest.mark.slow
@pytest.mark.parametrize("case_id", list(STATISTICS_CASES))
def test_output_mean_and_variance(case_id):
    x, values, outputs = _draws(case_id)
    mean, variance = _reference_moments(case_id, x, values)
    assert outputs.shape[1:] == mean.shape
    # The separable outputs are products of normals, not normal: the
    # variance check uses the fourth moment estimated from the draws.
    assert_sample_moments(outputs, mean, variance, normal=False)


@pytest.mark.slow
@pytest.mark.parametrize("case_id", list(STATISTICS_CASES))
def test_identical_examples_in_one_batch(case_id):
    layer_cls = STATISTICS_CASES[case_id][0]
    x, values, outputs = _draws(case_id)
    if layer_cls.estimator == "reparameterization":
        np.testing.assert_array_equal(outputs[:, 0], outputs[:, 1])
        return
    mean, _ = _reference_moments(case_id, x, values)
    first = (outputs[:, 0] - mean[0]).reshape(NUM_CALLS, -1)
    second = (outputs[:, 1] - mean[1]).reshape(NUM_CALLS, -1)
    assert not np.allclose(first, second)
    correlation = np.sum(first * second, axis=0) / np.sqrt(
        np.sum(first**2, axis=0) * np.sum(second**2, axis=0)
    )
    # Uncorrelated perturbations: the sample correlation's standard
    # deviation is sqrt(E[p0**2 p1**2] / (n E[p0**2] E[p1**2])) (products
    # of normals at the separable's two stages are not normal, so the
    # ratio is estimated from the draws, per element).
    ratio = np.mean(first**2 * second**2, axis=0) / (
        np.mean(first**2, axis=0) * np.mean(second**2, axis=0)
    )
    bound = Z * np.sqrt(ratio / NUM_CALLS)
    assert np.all(np.abs(correlation) < bound), (correlation, bound)


# -- KL ----------------------------------------------------------------------


def _numpy_normal_kl(loc, scale):
    loc, scale = np.asarray(loc, "float64"), np.asarray(scale, "float64")
    return np.sum(-np.log(scale) + 0.5 * (scale**2 + loc**2) - 0.5)


@pytest.mark.parametrize(
    "layer_cls", ALL_CLASSES, ids=[c.__name__ for c in ALL_CLASSES]
)
def test_kl_sums_the_closed_form_over_every_kernel(layer_cls):
    kwargs = {"kernel_size": 2, "depth_multiplier": 2}
    if layer_cls in SEPARABLE[layer_cls.rank]:
        kwargs["filters"] = 3
    shape = _shape(layer_cls.rank, {})
    layer = layer_cls(**kwargs, kl_weight=0.25)
    layer.build(shape)
    assign_posterior(layer)
    layer(_inputs(shape))
    values = {v.name: _to_numpy(v) for v in layer.trainable_weights}
    kernels = [n[: -len("_loc")] for n in values if n.endswith("kernel_loc")]
    assert len(kernels) == (2 if "filters" in kwargs else 1)
    expected = sum(
        _numpy_normal_kl(
            values[f"{k}_loc"], _scale(values[f"{k}_untransformed_scale"])
        )
        for k in kernels
    )
    (kl,) = layer.losses
    np.testing.assert_allclose(float(_to_numpy(kl)), 0.25 * expected, rtol=1e-5)


# -- members -------------------------------------------------------------


@pytest.mark.parametrize(
    "layer_cls", ALL_CLASSES, ids=[c.__name__ for c in ALL_CLASSES]
)
def test_members_equal_keras_layers(layer_cls):
    kwargs = {"kernel_size": 2, "depth_multiplier": 2, "strides": 2}
    if layer_cls in SEPARABLE[layer_cls.rank]:
        kwargs["filters"] = 3
    keras_cls = _keras_class(layer_cls)
    shape = _shape(layer_cls.rank, {})
    skip_unless_keras_runs(keras_cls, kwargs, shape)
    layer = layer_cls(**kwargs, batch_shape=(2,), posterior_value="mean")
    member_shape = shape[:1] + (2,) + shape[1:]
    layer.build(shape)
    assign_posterior(layer)
    x, x_members = _inputs(shape), _inputs(member_shape, seed=1)
    shared, per_member = _to_numpy(layer(x)), _to_numpy(layer(x_members))
    weights = _loc_weights(layer)
    for member in range(2):
        reference = keras_cls(**kwargs)
        reference.build(shape)
        reference.set_weights([w[member] for w in weights])
        np.testing.assert_allclose(
            shared[:, member], _to_numpy(reference(x)), rtol=RTOL, atol=ATOL
        )
        np.testing.assert_allclose(
            per_member[:, member],
            _to_numpy(reference(x_members[:, member])),
            rtol=RTOL,
            atol=ATOL,
        )
    assert not np.allclose(shared[:, 0], shared[:, 1])


# -- shared checks and errors ------------------------------------------------

DEPTHWISE_NAMES = ["kernel_loc", "kernel_untransformed_scale", "bias_loc"]
SEPARABLE_NAMES = [
    "depthwise_kernel_loc",
    "depthwise_kernel_untransformed_scale",
    "pointwise_kernel_loc",
    "pointwise_kernel_untransformed_scale",
    "bias_loc",
]
CONTROL_NAMES = ["kl_weight", "posterior_sample"]
# `rank: (input shape, output shape)` with kernel_size 3, depth_multiplier
# 2 (depthwise: 3 * 2 output channels; separable: 4 filters).
CONTRACT_SHAPES = {1: ((2, 7, 3), (2, 5)), 2: ((2, 6, 5, 3), (2, 4, 3))}


@pytest.mark.parametrize(
    "layer_cls", ALL_CLASSES, ids=[c.__name__ for c in ALL_CLASSES]
)
def test_layer_contract(layer_cls):
    input_shape, spatial = CONTRACT_SHAPES[layer_cls.rank]
    kwargs = {"kernel_size": 3, "depth_multiplier": 2}
    names = DEPTHWISE_NAMES
    channels = 6
    if layer_cls in SEPARABLE[layer_cls.rank]:
        kwargs["filters"] = 4
        names = SEPARABLE_NAMES
        channels = 4
    run_layer_test(
        layer_cls,
        kwargs,
        input_shape,
        spatial + (channels,),
        expected_variable_names=names + CONTROL_NAMES,
    )


def test_attributes_and_config():
    layer = kb.layers.SeparableConv2DFlipout(
        4, (3, 2), strides=2, padding="SAME", depth_multiplier=3
    )
    assert layer.filters == 4
    assert layer.kernel_size == (3, 2)
    assert layer.strides == (2, 2)
    assert layer.padding == "same"
    assert layer.depth_multiplier == 3
    config = layer.get_config()
    assert config["filters"] == 4 and config["depth_multiplier"] == 3
    depthwise = kb.layers.DepthwiseConv1DReparameterization(2, dilation_rate=2)
    assert depthwise.dilation_rate == (2,)
    assert "filters" not in depthwise.get_config()


@pytest.mark.parametrize(
    "layer_cls, kwargs, argument, received",
    [
        pytest.param(
            kb.layers.DepthwiseConv2DFlipout,
            {"kernel_size": 3, "depth_multiplier": 0},
            "depth_multiplier",
            "0",
            id="depth_multiplier_zero",
        ),
        pytest.param(
            kb.layers.SeparableConv1DReparameterization,
            {"filters": 2, "kernel_size": 3, "depth_multiplier": 1.5},
            "depth_multiplier",
            "1.5",
            id="depth_multiplier_float",
        ),
        pytest.param(
            kb.layers.SeparableConv2DFlipout,
            {"filters": 0, "kernel_size": 3},
            "filters",
            "0",
            id="filters_zero",
        ),
        pytest.param(
            kb.layers.DepthwiseConv1DFlipout,
            {"kernel_size": 3, "padding": "causal"},
            "padding",
            "'causal'",
            id="depthwise_causal",
        ),
        pytest.param(
            kb.layers.DepthwiseConv2DReparameterization,
            {"kernel_size": (3, 3, 3)},
            "kernel_size",
            "(3, 3, 3)",
            id="kernel_size_rank",
        ),
        pytest.param(
            kb.layers.SeparableConv2DReparameterization,
            {"filters": 2, "kernel_size": 3, "kl_weight": -1.0},
            "kl_weight",
            "-1.0",
            id="kl_weight_negative",
        ),
        pytest.param(
            kb.layers.DepthwiseConv2DFlipout,
            {"kernel_size": 3, "batch_shape": (0,)},
            "batch_shape",
            "(0,)",
            id="batch_shape_zero",
        ),
    ],
)
def test_argument_errors(layer_cls, kwargs, argument, received):
    with pytest.raises(ValueError) as error:
        layer_cls(**kwargs)
    message = str(error.value)
    assert message.startswith(f"Invalid value for argument `{argument}`.")
    assert message.endswith(f"Received: {argument}={received}")


def test_strides_with_dilation_is_an_error():
    with pytest.raises(ValueError, match="A stride greater than 1 cannot"):
        kb.layers.DepthwiseConv2DFlipout(3, strides=2, dilation_rate=2)


def test_wrong_input_rank_is_an_error():
    layer = kb.layers.SeparableConv2DFlipout(2, 3)
    with pytest.raises(ValueError, match="expected ndim=4"):
        layer(np.zeros((2, 5, 3), "float32"))
