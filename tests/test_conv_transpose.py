"""Bayesian transposed convolutions (`ConvNDTranspose{Reparameterization,
Flipout}`): their geometry and arguments.

- output shapes equal `keras.layers.ConvNDTranspose` for every combination
  of strides, padding, output_padding, dilation and data_format;
- the shared layer checks (`run_layer_test`), attributes and config;
- the argument errors.

Their mean mode is tested with the other layers' in `test_mean_parity.py`,
their sampling statistics in `test_estimator_statistics.py`.
"""

import itertools

import keras
import numpy as np
import pytest

import keras_bayes as kb
from tests.layer_test import (
    BAYES_CONV,
    CONTROL_NAMES,
    KERAS_CONV,
    POSTERIOR_NAMES,
    TRANSPOSE_CLASSES,
    run_layer_test,
)

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


# Per-axis arguments, cut to the rank of the case.
PER_AXIS_CASES = {
    "valid_strides": {
        "kernel_size": (3, 2, 1),
        "strides": (2, 1, 3),
        "padding": "valid",
    },
    "same_strides_output_padding": {
        "kernel_size": (2, 3, 4),
        "strides": (3, 2, 1),
        "padding": "same",
        "output_padding": (1, 0, 0),
    },
    "valid_strides_output_padding": {
        "kernel_size": (4, 1, 3),
        "strides": (2, 3, 2),
        "padding": "valid",
        "output_padding": (0, 2, 1),
    },
    "valid_dilation": {"kernel_size": (3, 2, 2), "dilation_rate": (2, 1, 3)},
    "same_dilation_output_padding0": {
        "kernel_size": (2, 3, 2),
        "dilation_rate": (1, 2, 2),
        "padding": "same",
        "output_padding": 0,
    },
}


@pytest.mark.parametrize(
    "rank", [pytest.param(2, id="rank2"), pytest.param(3, id="rank3")]
)
@pytest.mark.parametrize(
    "kwargs",
    [pytest.param(kwargs, id=id_) for id_, kwargs in PER_AXIS_CASES.items()],
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


@pytest.mark.parametrize(
    "layer_cls", TRANSPOSE_CLASSES, ids=lambda c: c.__name__
)
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
