"""Bayesian transposed convolutions (`ConvNDTranspose{Reparameterization,
Flipout}`).

- output shapes equal `keras.layers.ConvNDTranspose` for every combination
  of strides, padding, output_padding, dilation and data_format;
- mean mode computes exactly the Keras layer with `kernel=kernel_loc`;
- sampled outputs have the documented marginal (mean
  `conv_transpose(x, loc) + b`, variance `conv_transpose(x**2, scale**2)`),
  checked against a float64 numpy transposed convolution of our own;
  Flipout decorrelates identical examples, reparameterization does not;
- the shared layer checks (`run_layer_test`) and the argument errors.
"""

import functools
import itertools

import keras
import numpy as np
import pytest
from keras import ops

import keras_bayes as kb
from tests.keras_support import skip_unless_keras_runs
from tests.layer_test import (
    BAYES_CONV,
    KERAS_CONV,
    TRANSPOSE_CLASSES,
    randomize_posterior,
    run_layer_test,
)

ALL_CLASSES = TRANSPOSE_CLASSES
POSTERIOR_NAMES = ["kernel_loc", "kernel_untransformed_scale", "bias_loc"]
CONTROL_NAMES = ["kl_weight", "posterior_sample"]

# float32 sums of a few dozen O(1) products on both sides.
RTOL = 1e-5
ATOL = 1e-5
# Non-square spatial sizes, so that a swapped axis changes the shape.
SPATIAL = (5, 4, 3)


def _to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def _per_axis(rank, first, rest):
    return (first,) + (rest,) * (rank - 1)


# -- output shapes --------------------------------------------------------


def _shape_grid():
    """Every 1D combination of the geometry arguments Keras accepts."""
    for kernel, stride, dilation, padding, length in itertools.product(
        (1, 2, 3, 4), (1, 2, 3), (1, 2), ("valid", "same"), (1, 2, 5)
    ):
        if stride > 1 and dilation > 1:
            continue
        for output_padding in (None, *range(stride)):
            yield kernel, stride, dilation, padding, output_padding, length


def test_output_shape_matches_keras_on_the_whole_1d_grid():
    for (
        kernel,
        stride,
        dilation,
        padding,
        output_padding,
        length,
    ) in _shape_grid():
        for data_format in ("channels_last", "channels_first"):
            kwargs = {
                "filters": 3,
                "kernel_size": kernel,
                "strides": stride,
                "dilation_rate": dilation,
                "padding": padding,
                "output_padding": output_padding,
                "data_format": data_format,
            }
            shape = (
                (None, length, 2)
                if data_format == "channels_last"
                else (None, 2, length)
            )
            expected = keras.layers.Conv1DTranspose(
                **kwargs
            ).compute_output_shape(shape)
            layer = kb.layers.Conv1DTransposeFlipout(**kwargs)
            if 0 in expected:
                # Keras gives an empty output (e.g. length 1, even kernel,
                # "same", output_padding 0); the layer says so instead.
                with pytest.raises(ValueError, match="gives an empty output"):
                    layer.compute_output_shape(shape)
                continue
            assert layer.compute_output_shape(shape) == tuple(expected), kwargs


@pytest.mark.parametrize("rank", [2, 3])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": (3, 2, 1), "strides": (2, 1, 3), "padding": "valid"},
        {
            "kernel_size": (2, 3, 4),
            "strides": (3, 2, 1),
            "padding": "same",
            "output_padding": (1, 0, 0),
        },
        {
            "kernel_size": (4, 1, 3),
            "strides": (2, 3, 2),
            "padding": "valid",
            "output_padding": (0, 2, 1),
        },
        {"kernel_size": (3, 2, 2), "dilation_rate": (2, 1, 3)},
        {
            "kernel_size": (2, 3, 2),
            "dilation_rate": (1, 2, 2),
            "padding": "same",
            "output_padding": 0,
        },
    ],
)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_output_shape_matches_keras_per_axis(rank, kwargs, data_format):
    kwargs = {
        key: value[:rank] if isinstance(value, tuple) else value
        for key, value in kwargs.items()
    }
    kwargs.update(filters=2, data_format=data_format)
    spatial = (2, 4, 3)[:rank]
    shape = (
        (None, *spatial, 3)
        if data_format == "channels_last"
        else (None, 3, *spatial)
    )
    expected = KERAS_CONV[rank, True](**kwargs).compute_output_shape(shape)
    for layer_cls in BAYES_CONV[rank, True]:
        layer = layer_cls(**kwargs)
        assert layer.compute_output_shape(shape) == tuple(expected)


# -- mean mode equals Keras -----------------------------------------------


def _transpose_cases(rank):
    """`(id, conv kwargs, extra Bayesian kwargs, input channels)`.

    In the channels_first cases the last output spatial size differs from
    `filters`: for those shapes `keras.ops.add` on TensorFlow would add the
    reference layer's `(1, filters, 1, ...)` bias along the last axis.
    """
    cases = [
        ("defaults", {"filters": 3, "kernel_size": 2}, {}, 2),
        (
            "strides2_same",
            {"filters": 3, "kernel_size": 3, "strides": 2, "padding": "same"},
            {},
            2,
        ),
        (
            "strides2_valid_output_padding1",
            {
                "filters": 2,
                "kernel_size": 3,
                "strides": 2,
                "output_padding": 1,
            },
            {},
            3,
        ),
        (
            "strides3_same_even_kernel_output_padding",
            {
                "filters": 2,
                "kernel_size": 2,
                "strides": 3,
                "padding": "same",
                "output_padding": _per_axis(rank, 2, 1),
            },
            {},
            2,
        ),
        (
            "per_axis_kernel_and_strides",
            {
                "filters": 2,
                "kernel_size": _per_axis(rank, 3, 2),
                "strides": _per_axis(rank, 2, 1),
                "padding": "VALID",
            },
            {},
            3,
        ),
        (
            "dilation2_same",
            {
                "filters": 2,
                "kernel_size": 3,
                "dilation_rate": 2,
                "padding": "same",
            },
            {},
            2,
        ),
        (
            "dilation2_valid_output_padding0",
            {
                "filters": 3,
                "kernel_size": 2,
                "dilation_rate": _per_axis(rank, 2, 1),
                "output_padding": 0,
            },
            {},
            2,
        ),
        (
            "channels_first_strides2_same",
            {
                "filters": 3,
                "kernel_size": 3,
                "strides": 2,
                "padding": "same",
                "data_format": "channels_first",
            },
            {},
            2,
        ),
        (
            "channels_first_dilation2_valid",
            {
                "filters": 2,
                "kernel_size": 2,
                "dilation_rate": 2,
                "data_format": "channels_first",
            },
            {},
            3,
        ),
        (
            "no_bias_relu",
            {
                "filters": 3,
                "kernel_size": 2,
                "use_bias": False,
                "activation": "relu",
            },
            {},
            2,
        ),
        (
            "stochastic_bias_tanh",
            {"filters": 3, "kernel_size": 2, "activation": "tanh"},
            {"bias_posterior": "mean_field_normal", "bias_prior": "normal"},
            2,
        ),
    ]
    if rank == 3:
        # The geometry is rank-generic; rank 3 keeps the cases with the
        # most index arithmetic.
        keep = (
            "strides3_same_even_kernel_output_padding",
            "per_axis_kernel_and_strides",
            "dilation2_valid_output_padding0",
            "channels_first_strides2_same",
        )
        cases = [case for case in cases if case[0] in keep]
    return cases


def _parity_params():
    # Both estimators reduce to the same transposed convolution in mean
    # mode: the grid alternates between them.
    params = []
    for rank in (1, 2, 3):
        for i, (case_id, kwargs, bayes_kwargs, channels) in enumerate(
            _transpose_cases(rank)
        ):
            layer_cls = BAYES_CONV[rank, True][(i + rank) % 2]
            params.append(
                pytest.param(
                    rank,
                    layer_cls,
                    kwargs,
                    bayes_kwargs,
                    channels,
                    id=f"{layer_cls.__name__}-{case_id}",
                )
            )
    return params


def _inputs(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize(
    "rank, layer_cls, kwargs, bayes_kwargs, channels", _parity_params()
)
def test_mean_equals_keras_conv_transpose(
    rank, layer_cls, kwargs, bayes_kwargs, channels
):
    channels_first = kwargs.get("data_format") == "channels_first"
    spatial = SPATIAL[:rank]
    shape = (
        (2, channels, *spatial) if channels_first else (2, *spatial, channels)
    )
    skip_unless_keras_runs(KERAS_CONV[rank, True], kwargs, shape)
    x = _inputs(shape)
    layer = layer_cls(**kwargs, **bayes_kwargs, posterior_value="mean")
    layer.build(x.shape)
    randomize_posterior(layer)

    reference = KERAS_CONV[rank, True](**kwargs)
    reference.build(x.shape)
    weights = [_to_numpy(layer.kernel_loc)]
    if layer.use_bias:
        weights.append(_to_numpy(layer.bias_loc))
    reference.set_weights(weights)
    expected = _to_numpy(reference(x))
    if channels_first:
        assert expected.shape[-1] != kwargs["filters"], "ambiguous bias add"

    outputs = _to_numpy(layer(x))
    assert outputs.shape == expected.shape
    assert outputs.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(outputs, expected, rtol=RTOL, atol=ATOL)


# -- sampling statistics --------------------------------------------------


def numpy_conv_transpose(x, kernel, strides, dilation_rate):
    """channels_last transposed convolution, "valid" padding, float64.

    `x`: `(N, *spatial, C)`; `kernel`: `(*kernel_size, F, C)`. Each input
    position scatters `kernel[offset] @ x` to output position
    `position * stride + offset * dilation`; the output is
    `(length - 1) * stride + span` long (Keras' size when span >= stride).
    """
    x = np.asarray(x, "float64")
    kernel = np.asarray(kernel, "float64")
    rank = x.ndim - 2
    kernel_size = kernel.shape[:rank]
    spans = [dilation_rate[i] * (kernel_size[i] - 1) + 1 for i in range(rank)]
    out_size = [
        (x.shape[1 + i] - 1) * strides[i] + spans[i] for i in range(rank)
    ]
    out = np.zeros((x.shape[0], *out_size, kernel.shape[-2]))
    for offset in np.ndindex(*kernel_size):
        window = tuple(
            slice(
                offset[i] * dilation_rate[i],
                offset[i] * dilation_rate[i]
                + (x.shape[1 + i] - 1) * strides[i]
                + 1,
                strides[i],
            )
            for i in range(rank)
        )
        out[(slice(None),) + window] += x @ kernel[offset].T
    return out


def test_numpy_conv_transpose_reference_by_hand():
    # x = [1, 2], kernel [1, 10, 100], stride 2: the two copies of the
    # kernel, scaled by 1 and 2, start at 0 and 2 and overlap at 2.
    x = np.array([1.0, 2.0]).reshape(1, 2, 1)
    kernel = np.array([1.0, 10.0, 100.0]).reshape(3, 1, 1)
    out = numpy_conv_transpose(x, kernel, strides=(2,), dilation_rate=(1,))
    np.testing.assert_array_equal(out.ravel(), [1, 10, 102, 20, 200])
    # Dilation 2 spreads the taps: [1, 0, 10] from x[0], shifted by one.
    kernel = np.array([1.0, 10.0]).reshape(2, 1, 1)
    out = numpy_conv_transpose(x, kernel, strides=(1,), dilation_rate=(2,))
    np.testing.assert_array_equal(out.ravel(), [1, 2, 10, 20])
    # Two filters and two channels: out[f] = sum_c kernel[f, c] * x[c].
    x = np.array([[1.0, 2.0]]).reshape(1, 1, 2)
    kernel = np.array([[3.0, 4.0], [5.0, 6.0]]).reshape(1, 2, 2)
    out = numpy_conv_transpose(x, kernel, strides=(1,), dilation_rate=(1,))
    np.testing.assert_array_equal(out.ravel(), [11.0, 17.0])


# Independent calls per statistic. Each check allows 5 standard errors: a
# two-sided normal tail of 5.7e-7 per element, and at most a few hundred
# elements per case keep a false failure below 1e-3 for any seed.
NUM_CALLS = 1000
Z = 5.0
# float32 layer arithmetic against the float64 reference.
FLOAT_ATOL = 1e-4

# `(layer class, kwargs, input shape without batch, strides, dilation,
# member_inputs)`; with a `batch_shape`, inputs without member axes are
# fed to every member unless `member_inputs`.
STATISTICS_CASES = {
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
}


def _scale(untransformed):
    """The documented `softplus(u) + 1e-5`, in float64."""
    return np.logaddexp(0.0, np.asarray(untransformed, "float64")) + 1e-5


def _skip_unless_keras_runs_case(case_id):
    layer_cls, kwargs, feature_shape, strides, _ = STATISTICS_CASES[case_id]
    member_inputs = len(feature_shape) == len(strides) + 2
    member_shape = feature_shape[1:] if member_inputs else feature_shape
    skip_unless_keras_runs(
        KERAS_CONV[layer_cls.rank, True], kwargs, (3,) + member_shape
    )


@functools.cache
def _draws(case_id):
    """`NUM_CALLS` outputs of one layer on the batch `[x0, x0, x1]`.

    `predict` over `NUM_CALLS` copies of the batch with `batch_size=3`
    makes one layer call, with a new draw, per copy. Cached: the moment and
    the duplicate tests share one run.
    """
    layer_cls, kwargs, feature_shape, _, _ = STATISTICS_CASES[case_id]
    layer = layer_cls(**kwargs, seed=4321)
    model = keras.Sequential([keras.Input(shape=feature_shape), layer])
    rng = np.random.default_rng(5)
    values = {}
    for variable in layer.trainable_weights:
        shape = tuple(variable.shape)
        # Scales varying per weight in (0.2, 1): a scale read from the
        # wrong place changes the variances.
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
    outputs = outputs.reshape((NUM_CALLS, 3) + outputs.shape[1:])
    return x, values, outputs


def _reference_moments(case_id, x, values):
    _, kwargs, feature_shape, strides, dilation = STATISTICS_CASES[case_id]
    loc = values["kernel_loc"]
    variance_kernel = _scale(values["kernel_untransformed_scale"]) ** 2
    bias = values["bias_loc"]
    if "batch_shape" not in kwargs:
        mean = numpy_conv_transpose(x, loc, strides, dilation)
        variance = numpy_conv_transpose(
            x**2, variance_kernel, strides, dilation
        )
        return mean + bias, variance
    member_inputs = len(feature_shape) == len(strides) + 2
    means, variances = [], []
    for member in range(kwargs["batch_shape"][0]):
        x_member = x[:, member] if member_inputs else x
        means.append(
            numpy_conv_transpose(x_member, loc[member], strides, dilation)
            + bias[member]
        )
        variances.append(
            numpy_conv_transpose(
                x_member**2, variance_kernel[member], strides, dilation
            )
        )
    return np.stack(means, axis=1), np.stack(variances, axis=1)


@pytest.mark.slow
@pytest.mark.parametrize("case_id", list(STATISTICS_CASES))
def test_output_mean_and_variance(case_id):
    _skip_unless_keras_runs_case(case_id)
    x, values, outputs = _draws(case_id)
    mean, variance = _reference_moments(case_id, x, values)
    assert outputs.shape[1:] == mean.shape
    n = NUM_CALLS
    # Independent calls: per element the sample mean has standard error
    # sqrt(variance / n); the marginal being normal, the sample variance
    # has standard error variance * sqrt(2 / (n - 1)).
    np.testing.assert_array_less(
        np.abs(outputs.mean(axis=0) - mean),
        Z * np.sqrt(variance / n) + FLOAT_ATOL,
    )
    np.testing.assert_array_less(
        np.abs(outputs.var(axis=0, ddof=1) - variance),
        Z * variance * np.sqrt(2.0 / (n - 1)) + FLOAT_ATOL,
    )


@pytest.mark.slow
@pytest.mark.parametrize("case_id", list(STATISTICS_CASES))
def test_identical_examples_in_one_batch(case_id):
    layer_cls = STATISTICS_CASES[case_id][0]
    _skip_unless_keras_runs_case(case_id)
    x, values, outputs = _draws(case_id)
    if layer_cls.estimator == "reparameterization":
        # One kernel per call, shared by the batch.
        np.testing.assert_array_equal(outputs[:, 0], outputs[:, 1])
        return
    mean, _ = _reference_moments(case_id, x, values)
    first = (outputs[:, 0] - mean[0]).reshape(NUM_CALLS, -1)
    second = (outputs[:, 1] - mean[1]).reshape(NUM_CALLS, -1)
    correlation = np.sum(first * second, axis=0) / np.sqrt(
        np.sum(first**2, axis=0) * np.sum(second**2, axis=0)
    )
    # Uncorrelated perturbations p0, p1 sharing the kernel noise: the
    # sample correlation has standard deviation sqrt(E[p0**2 p1**2] /
    # (n sigma**4)) <= sqrt(3 / n) (a sum over sign-flipped channel parts,
    # as for the convolutions).
    bound = Z * np.sqrt(3.0 / NUM_CALLS)
    assert np.max(np.abs(correlation)) < bound, correlation


# -- shared layer checks ---------------------------------------------------


# `rank: (kwargs, input shape, output shape)` with `filters=4,
# kernel_size=3`. Rank 2: (4 - 1) * 2 + 3 + 1 and (3 - 1) + 3; rank 3:
# length + 4 with the dilated span of 5.
CONTRACT_CASES = {
    1: ({"strides": 2, "padding": "same"}, (2, 5, 3), (2, 10, 4)),
    2: (
        {"strides": (2, 1), "output_padding": (1, 0)},
        (2, 4, 3, 2),
        (2, 10, 5, 4),
    ),
    3: ({"dilation_rate": 2}, (2, 3, 2, 3, 2), (2, 7, 6, 7, 4)),
}


@pytest.mark.parametrize("layer_cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_layer_contract(layer_cls):
    kwargs, input_shape, output_shape = CONTRACT_CASES[layer_cls.rank]
    run_layer_test(
        layer_cls,
        {"filters": 4, "kernel_size": 3, **kwargs},
        input_shape,
        output_shape,
        expected_variable_names=POSTERIOR_NAMES + CONTROL_NAMES,
    )


def test_attributes_and_config():
    layer = kb.layers.Conv2DTransposeFlipout(
        4, (3, 2), strides=2, padding="SAME", output_padding=1
    )
    assert layer.filters == 4
    assert layer.kernel_size == (3, 2)
    assert layer.strides == (2, 2)
    assert layer.padding == "same"
    assert layer.output_padding == (1, 1)
    assert layer.dilation_rate == (1, 1)
    assert layer.batch_shape == ()
    config = layer.get_config()
    assert config["output_padding"] == (1, 1)
    assert "groups" not in config
    layer.build((None, 5, 5, 3))
    # Keras' transposed layout: kernel_size + (filters, in_channels).
    assert tuple(layer.kernel_loc.shape) == (3, 2, 4, 3)


# -- errors -----------------------------------------------------------------


def test_output_padding_not_smaller_than_strides():
    with pytest.raises(ValueError) as info:
        kb.layers.Conv1DTransposeFlipout(2, 3, strides=2, output_padding=2)
    assert str(info.value) == (
        "Invalid value for argument `output_padding`. Expected every entry "
        "to be smaller than the matching stride (strides=(2,)). Received: "
        "output_padding=2"
    )
    with pytest.raises(ValueError, match="Received: output_padding=\\(0, 1\\)"):
        kb.layers.Conv2DTransposeReparameterization(
            2, 3, strides=(2, 1), output_padding=(0, 1)
        )


def test_causal_padding_is_refused():
    with pytest.raises(ValueError) as info:
        kb.layers.Conv1DTransposeFlipout(2, 3, padding="causal")
    assert str(info.value) == (
        'Invalid value for argument `padding`. Expected one of "valid", '
        "\"same\". Received: padding='causal'"
    )


def test_groups_is_not_an_argument():
    # Keras' own refusal of an unknown keyword.
    with pytest.raises(ValueError, match="Unrecognized keyword.*'groups'"):
        kb.layers.Conv2DTransposeFlipout(2, 3, groups=2)


def test_strides_with_dilation_are_refused():
    with pytest.raises(ValueError, match="`strides` and `dilation_rate`"):
        kb.layers.Conv2DTransposeFlipout(2, 3, strides=2, dilation_rate=2)


def test_wrong_input_rank_fails_at_build():
    layer = kb.layers.Conv2DTransposeFlipout(2, 3)
    with pytest.raises(ValueError, match="expected ndim=4"):
        layer(np.zeros((2, 5, 3), "float32"))
