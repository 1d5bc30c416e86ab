"""Mean mode equals the matching `keras.layers` layer.

With `posterior_value="mean"` a Bayesian layer must compute exactly what the
deterministic Keras layer computes with `kernel=kernel_loc` and
`bias=bias_loc`: convolutions, transposed convolutions and dense layers.
Every posterior scale is set large (about 1-1.7) so that any leak of
sampling into mean mode would change the outputs by far more than the
tolerance.
"""

import keras
import numpy as np
import pytest

import keras_bayes as kb
from tests.helpers import assign_posterior, normal_inputs, to_numpy
from tests.keras_support import skip_unless_keras_runs
from tests.layer_test import BAYES_CONV, DENSE_CLASSES, KERAS_CONV

# float32 convolutions of a few dozen products of O(1) numbers: both sides
# round differently at most by a few ulps of the O(1)-O(10) outputs.
RTOL = 1e-5
ATOL = 1e-5

# Non-square spatial sizes, so that a swapped axis changes the output shape.
CONV_SPATIAL = (7, 6, 5)
TRANSPOSE_SPATIAL = (5, 4, 3)


def _per_axis(rank, first, rest):
    """A tuple argument that differs along the first spatial axis."""
    return (first,) + (rest,) * (rank - 1)


# The cases that open and close both convolution grids below, each a
# `(id, conv kwargs, extra Bayesian kwargs, input channels)`.
LEADING_CASES = [
    ("defaults", {"filters": 3, "kernel_size": 2}, {}, 2),
    (
        "strides2_same",
        {"filters": 3, "kernel_size": 3, "strides": 2, "padding": "same"},
        {},
        2,
    ),
]
TRAILING_CASES = [
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


def _rank3_subset(rank, cases, keep):
    """The geometry code is rank-generic and ranks 1-2 run the full grid;
    rank 3 keeps the cases with the most index arithmetic."""
    if rank != 3:
        return cases
    return [case for case in cases if case[0] in keep]


def _conv_cases(rank):
    """`(id, conv kwargs, extra Bayesian kwargs, input channels)` for a rank.

    Each case varies one or two arguments away from the default, so that a
    failure points at the argument. In the channels_first cases the last
    spatial size of the output differs from `filters`: there `keras.ops.add`
    on TensorFlow takes a `(1, filters, 1, ...)` bias for a channels_last
    one, which would make the reference (`keras.layers.ConvND`) wrong;
    `test_channels_first_where_keras_bias_add_is_ambiguous` covers those
    shapes against another reference.
    """
    cases = [
        *LEADING_CASES,
        (
            "per_axis_strides_valid",
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
            "dilation2_same_even_kernel",
            {
                "filters": 2,
                "kernel_size": 2,
                "dilation_rate": 2,
                "padding": "same",
            },
            {},
            2,
        ),
        ("groups2", {"filters": 4, "kernel_size": 2, "groups": 2}, {}, 4),
        (
            "channels_first_strides2_same",
            {
                "filters": 2,
                "kernel_size": 3,
                "strides": 2,
                "padding": "same",
                "data_format": "channels_first",
            },
            {},
            2,
        ),
        (
            "channels_first_groups2_dilation2",
            {
                "filters": 2,
                "kernel_size": 2,
                "groups": 2,
                "dilation_rate": _per_axis(rank, 2, 1),
                "data_format": "channels_first",
            },
            {},
            6,
        ),
        *TRAILING_CASES,
    ]
    if rank == 1:
        cases += [
            (
                "causal_dilation2",
                {
                    "filters": 3,
                    "kernel_size": 3,
                    "padding": "causal",
                    "dilation_rate": 2,
                },
                {},
                2,
            ),
            (
                "causal_channels_first",
                {
                    "filters": 3,
                    "kernel_size": 2,
                    "padding": "causal",
                    "data_format": "channels_first",
                },
                {},
                2,
            ),
        ]
    return _rank3_subset(
        rank,
        cases,
        (
            "defaults",
            "per_axis_strides_valid",
            "channels_first_strides2_same",
            "channels_first_groups2_dilation2",
        ),
    )


def _transpose_cases(rank):
    """`(id, conv kwargs, extra Bayesian kwargs, input channels)`.

    In the channels_first cases the last output spatial size differs from
    `filters`: for those shapes `keras.ops.add` on TensorFlow would add the
    reference layer's `(1, filters, 1, ...)` bias along the last axis.
    """
    cases = [
        *LEADING_CASES,
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
        *TRAILING_CASES,
    ]
    return _rank3_subset(
        rank,
        cases,
        (
            "strides3_same_even_kernel_output_padding",
            "per_axis_kernel_and_strides",
            "dilation2_valid_output_padding0",
            "channels_first_strides2_same",
        ),
    )


def _params(cases, transpose):
    # In mean mode both estimators reduce to the same convolution, so the
    # grid alternates between them instead of running every case twice:
    # each estimator still meets every rank and most arguments.
    params = []
    for rank in (1, 2, 3):
        for i, (case_id, kwargs, bayes_kwargs, channels) in enumerate(
            cases(rank)
        ):
            layer_cls = BAYES_CONV[rank, transpose][(i + rank) % 2]
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


def _keras_weights(layer):
    weights = [to_numpy(layer.kernel_loc)]
    if layer.use_bias:
        weights.append(to_numpy(layer.bias_loc))
    return weights


def _keras_reference(keras_cls, kwargs, bayes_layer, x):
    reference = keras_cls(**kwargs)
    reference.build(x.shape)
    reference.set_weights(_keras_weights(bayes_layer))
    return to_numpy(reference(x))


def _check_mean_equals_keras(
    rank, transpose, layer_cls, kwargs, bayes_kwargs, channels
):
    spatial = (TRANSPOSE_SPATIAL if transpose else CONV_SPATIAL)[:rank]
    channels_first = kwargs.get("data_format") == "channels_first"
    shape = (
        (2, channels, *spatial) if channels_first else (2, *spatial, channels)
    )
    keras_cls = KERAS_CONV[rank, transpose]
    skip_unless_keras_runs(keras_cls, kwargs, shape)
    x = normal_inputs(shape)
    layer = layer_cls(**kwargs, **bayes_kwargs, posterior_value="mean")
    layer.build(x.shape)
    assign_posterior(layer)

    expected = _keras_reference(keras_cls, kwargs, layer, x)
    if channels_first:
        assert expected.shape[-1] != kwargs["filters"], "ambiguous bias add"
    outputs = to_numpy(layer(x))

    assert outputs.shape == expected.shape
    assert outputs.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(outputs, expected, rtol=RTOL, atol=ATOL)
    # Mean mode is deterministic: a second call gives the same values.
    np.testing.assert_array_equal(to_numpy(layer(x)), outputs)


@pytest.mark.parametrize(
    "rank, layer_cls, kwargs, bayes_kwargs, channels",
    _params(_conv_cases, transpose=False),
)
def test_conv_mean_equals_keras_conv(
    rank, layer_cls, kwargs, bayes_kwargs, channels
):
    _check_mean_equals_keras(
        rank, False, layer_cls, kwargs, bayes_kwargs, channels
    )


@pytest.mark.parametrize(
    "rank, layer_cls, kwargs, bayes_kwargs, channels",
    _params(_transpose_cases, transpose=True),
)
def test_mean_equals_keras_conv_transpose(
    rank, layer_cls, kwargs, bayes_kwargs, channels
):
    _check_mean_equals_keras(
        rank, True, layer_cls, kwargs, bayes_kwargs, channels
    )


# Output spatial sizes ending in `filters` (3): the shapes for which
# `keras.ops.add` on TensorFlow adds a channels_first bias along the wrong
# axis. The reference is the channels_last Keras layer on transposed inputs.
AMBIGUOUS_BIAS_SPATIAL = {1: (4,), 2: (5, 4), 3: (3, 5, 4)}


@pytest.mark.parametrize(
    "rank, layer_cls",
    [
        (1, BAYES_CONV[1, False][0]),
        (2, BAYES_CONV[2, False][1]),
        (3, BAYES_CONV[3, False][0]),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)),
)
def test_channels_first_where_keras_bias_add_is_ambiguous(rank, layer_cls):
    spatial = AMBIGUOUS_BIAS_SPATIAL[rank]
    x = normal_inputs((2, 2) + spatial)
    skip_unless_keras_runs(
        KERAS_CONV[rank, False],
        {"filters": 3, "kernel_size": 2, "data_format": "channels_first"},
        x.shape,
    )
    layer = layer_cls(
        3, 2, data_format="channels_first", posterior_value="mean"
    )
    layer.build(x.shape)
    assign_posterior(layer)

    to_last = (0,) + tuple(range(2, rank + 2)) + (1,)
    to_first = (0, rank + 1) + tuple(range(1, rank + 1))
    x_last = np.transpose(x, to_last)
    expected = _keras_reference(
        KERAS_CONV[rank, False], {"filters": 3, "kernel_size": 2}, layer, x_last
    )
    expected = np.transpose(expected, to_first)
    assert expected.shape[-1] == 3

    np.testing.assert_allclose(
        to_numpy(layer(x)), expected, rtol=RTOL, atol=ATOL
    )


DENSE_CASES = [
    ("defaults", {"units": 3}, {}, (4, 5)),
    (
        "no_bias_sigmoid",
        {"units": 2, "use_bias": False, "activation": "sigmoid"},
        {},
        (4, 5),
    ),
    ("rank3_inputs_relu", {"units": 3, "activation": "relu"}, {}, (2, 3, 4)),
    (
        "stochastic_bias",
        {"units": 3},
        {"bias_posterior": "mean_field_normal", "bias_prior": "normal"},
        (4, 5),
    ),
]
# Each case with two of the three estimators, cycling, so that every
# estimator meets most cases.
DENSE_PARAMS = [
    pytest.param(
        DENSE_CLASSES[(i + shift) % 3],
        dense_kwargs,
        bayes_kwargs,
        input_shape,
        id=f"{DENSE_CLASSES[(i + shift) % 3].__name__}-{case_id}",
    )
    for i, (case_id, dense_kwargs, bayes_kwargs, input_shape) in enumerate(
        DENSE_CASES
    )
    for shift in (0, 1)
]


@pytest.mark.parametrize(
    "layer_cls, dense_kwargs, bayes_kwargs, input_shape", DENSE_PARAMS
)
def test_dense_mean_equals_keras_dense(
    layer_cls, dense_kwargs, bayes_kwargs, input_shape
):
    x = normal_inputs(input_shape)
    layer = layer_cls(**dense_kwargs, **bayes_kwargs, posterior_value="mean")
    layer.build(x.shape)
    assign_posterior(layer)

    expected = _keras_reference(keras.layers.Dense, dense_kwargs, layer, x)
    outputs = to_numpy(layer(x))

    assert outputs.shape == expected.shape
    np.testing.assert_allclose(outputs, expected, rtol=RTOL, atol=ATOL)


SWITCH_CASES = [
    (
        kb.layers.Conv2DFlipout,
        {"filters": 3, "kernel_size": 2, "padding": "same"},
        (4, 5, 4, 2),
    ),
    (
        kb.layers.Conv1DReparameterization,
        {"filters": 2, "kernel_size": 3, "padding": "causal"},
        (4, 6, 3),
    ),
    (kb.layers.DenseLocalReparameterization, {"units": 3}, (4, 5)),
]


def _model(layer, input_shape):
    return keras.Sequential([keras.Input(shape=input_shape[1:]), layer])


@pytest.mark.parametrize(
    "layer_cls, kwargs, input_shape",
    SWITCH_CASES,
    ids=[case[0].__name__ for case in SWITCH_CASES],
)
def test_switching_to_mean_matches_mean_construction(
    layer_cls, kwargs, input_shape
):
    x = normal_inputs(input_shape)
    switched = _model(layer_cls(**kwargs), input_shape)
    constructed = _model(
        layer_cls(**kwargs, posterior_value="mean"), input_shape
    )
    assign_posterior(switched.layers[-1])
    # Only the posterior: the control variables keep their constructed
    # values.
    for source, target in zip(
        switched.trainable_weights, constructed.trainable_weights
    ):
        assert source.name == target.name
        target.assign(source)
    assert constructed.layers[-1].posterior_value == "mean"
    expected = to_numpy(constructed(x))

    # Compile `predict` in sample mode first: the switch must reach the
    # already-traced function.
    first = switched.predict(x, verbose=0)
    second = switched.predict(x, verbose=0)
    assert not np.allclose(first, second), "no new draw per predict call"
    assert not np.allclose(first, expected, rtol=1e-2, atol=1e-2)

    assert kb.set_posterior_value(switched, "mean") == 1
    assert switched.layers[-1].posterior_value == "mean"
    np.testing.assert_allclose(
        switched.predict(x, verbose=0), expected, rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        to_numpy(switched(x)), expected, rtol=RTOL, atol=ATOL
    )

    # And back: sampling again, from the same posterior.
    assert kb.set_posterior_value(switched.layers[-1], "sample") == 1
    resampled = switched.predict(x, verbose=0)
    assert not np.allclose(resampled, expected, rtol=1e-2, atol=1e-2)
