"""The NumPy references of `tests/references.py`, on values worked out by
hand, and the convolutions against Keras' own layers."""

import math

import keras
import numpy as np
import pytest

from tests import references
from tests.helpers import normal_inputs, to_numpy
from tests.keras_support import skip_unless_keras_runs


def _column(values):
    """A batch of one 1D single-channel input, `(1, length, 1)`."""
    return np.asarray(values, "float64").reshape(1, -1, 1)


def _taps(values):
    """A 1D single-channel, single-filter kernel, `(size, 1, 1)`."""
    return np.asarray(values, "float64").reshape(-1, 1, 1)


# -- scale and linear maps ----------------------------------------------------


def test_posterior_scale_by_hand():
    # softplus(0) = log 2; for large |u| softplus(u) is u or exp(u), with no
    # overflow; then the floor of 1e-5.
    np.testing.assert_allclose(
        references.posterior_scale([0.0, 50.0]),
        [math.log(2.0) + 1e-5, 50.0 + 1e-5],
        rtol=1e-15,
    )
    np.testing.assert_allclose(
        references.posterior_scale([-50.0]), [1e-5 + math.exp(-50.0)]
    )
    assert references.posterior_scale(np.float32(0.0)).dtype == np.float64


def test_dense_by_hand():
    x = np.array([[1.0, 2.0]])
    kernel = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    np.testing.assert_array_equal(references.dense(x, kernel), [[1, 2, 3]])
    np.testing.assert_array_equal(
        references.dense(x, kernel, bias=[10.0, 20.0, 30.0]), [[11, 22, 33]]
    )


def test_conv_by_hand():
    # x = [1, 2, 3, 4, 5], kernel [1, -1] with dilation 2 and stride 2 gives
    # x[t] - x[t + 2] at t = 0, 2.
    x = np.arange(1.0, 6.0).reshape(1, 5, 1)
    out = references.conv(x, _taps([1.0, -1.0]), (2,), (2,))
    np.testing.assert_array_equal(out.ravel(), [-2.0, -2.0])
    # Two input channels, 2D, stride 1: a plain sum of products.
    x = np.arange(18.0).reshape(1, 3, 3, 2)
    out = references.conv(x, np.ones((2, 2, 2, 1)), (1, 1), (1, 1))
    assert out[0, 0, 0, 0] == (0 + 1 + 2 + 3) + (6 + 7 + 8 + 9)


def test_conv_padding_by_hand():
    x = _column([1.0, 2.0, 3.0])
    kernel = _taps([1.0, 10.0, 100.0])
    # "same", odd kernel: one zero on each side, [0, 1, 2, 3, 0].
    out = references.conv(x, kernel, padding="same")
    np.testing.assert_array_equal(out.ravel(), [210.0, 321.0, 32.0])
    # "causal": span - 1 = 2 zeros before, [0, 0, 1, 2, 3].
    out = references.conv(x, kernel, padding="causal")
    np.testing.assert_array_equal(out.ravel(), [100.0, 210.0, 321.0])
    # "same", even kernel: the one zero goes after the input, [1, 2, 3, 0].
    out = references.conv(x, _taps([1.0, 10.0]), padding="same")
    np.testing.assert_array_equal(out.ravel(), [21.0, 32.0, 3.0])
    # "same" with stride 2 on 4 positions: 2 outputs, span 3 needs one zero
    # in all, after the input: [1, 2, 3, 4, 0] at positions 0 and 2.
    x = _column([1.0, 2.0, 3.0, 4.0])
    out = references.conv(x, kernel, strides=(2,), padding="same")
    np.testing.assert_array_equal(out.ravel(), [321.0, 43.0])


def test_conv_groups_by_hand():
    # Two channels, two filters, two groups: filter 0 sees channel 0 only,
    # filter 1 channel 1 only.
    x = np.array([3.0, 5.0]).reshape(1, 1, 2)
    kernel = np.array([2.0, 7.0]).reshape(1, 1, 2)
    out = references.conv(x, kernel, groups=2)
    np.testing.assert_array_equal(out.ravel(), [6.0, 35.0])
    # Without groups each filter sums both channels (kernel rows are the
    # channels, columns the filters).
    kernel = np.array([[1.0, 10.0], [100.0, 1000.0]]).reshape(1, 2, 2)
    out = references.conv(x, kernel, groups=1)
    np.testing.assert_array_equal(out.ravel(), [503.0, 5030.0])


def test_conv_transpose_by_hand():
    # x = [1, 2], kernel [1, 10, 100], stride 2: the two copies of the
    # kernel, scaled by 1 and 2, start at 0 and 2 and overlap at 2.
    x = _column([1.0, 2.0])
    kernel = _taps([1.0, 10.0, 100.0])
    out = references.conv_transpose(x, kernel, (2,), (1,))
    np.testing.assert_array_equal(out.ravel(), [1, 10, 102, 20, 200])
    # Dilation 2 spreads the taps: [1, 0, 10] from x[0], shifted by one.
    out = references.conv_transpose(x, _taps([1.0, 10.0]), (1,), (2,))
    np.testing.assert_array_equal(out.ravel(), [1, 2, 10, 20])
    # Two filters and two channels: out[f] = sum_c kernel[f, c] * x[c].
    x = np.array([[1.0, 2.0]]).reshape(1, 1, 2)
    kernel = np.array([[3.0, 4.0], [5.0, 6.0]]).reshape(1, 2, 2)
    out = references.conv_transpose(x, kernel, (1,), (1,))
    np.testing.assert_array_equal(out.ravel(), [11.0, 17.0])


def test_conv_transpose_padding_by_hand():
    x = _column([1.0, 2.0])
    kernel = _taps([1.0, 10.0, 100.0])
    # Stride 1: the full output [1, 12, 120, 200]; "same" keeps the
    # input's 2 positions, one dropped from each end.
    out = references.conv_transpose(x, kernel, padding="same")
    np.testing.assert_array_equal(out.ravel(), [12.0, 120.0])
    # Stride 2, "same": 4 positions of the full [1, 10, 102, 20, 200], the
    # one excess position dropped from the end.
    out = references.conv_transpose(x, kernel, (2,), padding="same")
    np.testing.assert_array_equal(out.ravel(), [1.0, 10.0, 102.0, 20.0])
    # Stride 3 > span 2, "valid": 2 * 3 positions, a zero past the full
    # output [1, 10, 0, 2, 20].
    out = references.conv_transpose(x, _taps([1.0, 10.0]), (3,))
    np.testing.assert_array_equal(out.ravel(), [1.0, 10.0, 0.0, 2.0, 20.0, 0.0])
    # output_padding 1 at stride 2, "valid": one position past the full
    # output. "same" with output_padding 0: (2 - 1) * 2 + 3 - 2 * (3 // 2)
    # = 3 positions, one dropped from each end of the full output.
    out = references.conv_transpose(x, kernel, (2,), output_padding=1)
    np.testing.assert_array_equal(out.ravel(), [1, 10, 102, 20, 200, 0])
    out = references.conv_transpose(
        x, kernel, (2,), padding="same", output_padding=0
    )
    np.testing.assert_array_equal(out.ravel(), [10.0, 102.0, 20.0])


# -- distributions ------------------------------------------------------------


def test_normal_kl_by_hand():
    # Zero between identical distributions; a pure mean shift of d costs
    # d**2 / (2 s0**2); a pure scale change s vs s0 costs
    # log(s0 / s) + s**2 / (2 s0**2) - 1/2.
    normal_kl = references.normal_kl
    assert normal_kl([0.3], [0.7], 0.3, 0.7) == pytest.approx(0.0, abs=1e-15)
    assert normal_kl([1.0], [2.0], 0.0, 2.0) == pytest.approx(1.0 / 8.0)
    assert normal_kl([0.0], [1.0], 0.0, 2.0) == pytest.approx(
        math.log(2.0) + 1.0 / 8.0 - 0.5
    )


def test_log_densities_by_hand():
    # N(1; 0, 2): -(1/2)(1/2)**2 - log 2 - log(2 pi) / 2.
    expected = -1.0 / 8.0 - math.log(2.0) - 0.5 * math.log(2.0 * math.pi)
    assert references.normal_log_density(1.0, 0.0, 2.0) == pytest.approx(
        expected, rel=1e-15
    )
    # A mixture of two equal components is that component.
    assert references.mixture_log_density(1.0, 0.3, 2.0, 2.0) == (
        pytest.approx(expected, rel=1e-15)
    )
    # Half and half of N(0, 1) and N(0, 3) at 0: the densities are
    # 1 / sqrt(2 pi) and 1 / (3 sqrt(2 pi)), their mean 2 / (3 sqrt(2 pi)).
    assert references.mixture_log_density(0.0, 0.5, 1.0, 3.0) == (
        pytest.approx(
            math.log(2.0 / 3.0) - 0.5 * math.log(2.0 * math.pi), rel=1e-15
        )
    )


def test_softmax_cross_entropy_by_hand():
    # Equal logits: log 2; logits (log 3, 0) give p = 3/4 to class 0.
    logits = np.array([[0.0, 0.0], [math.log(3.0), 0.0]])
    assert references.softmax_cross_entropy(logits, [0, 0]) == pytest.approx(
        0.5 * (math.log(2.0) - math.log(0.75))
    )
    # Shifting the logits changes nothing (and large ones do not overflow).
    assert references.softmax_cross_entropy(
        logits + 1000.0, [1, 1]
    ) == pytest.approx(0.5 * (math.log(2.0) - math.log(0.25)))


# -- the convolutions against Keras -------------------------------------------

# `Keras class, kwargs, input shape`; every kwarg but `filters` and
# `kernel_size` (the kernel has them) reaches the reference.
KERAS_CASES = {
    "conv1d_causal_groups2": (
        keras.layers.Conv1D,
        {"filters": 4, "kernel_size": 3, "padding": "causal", "groups": 2},
        (2, 7, 2),
    ),
    "conv1d_same_even_kernel_strides3": (
        keras.layers.Conv1D,
        {"filters": 2, "kernel_size": 2, "strides": 3, "padding": "same"},
        (2, 8, 3),
    ),
    "conv2d_same_dilation_groups3": (
        keras.layers.Conv2D,
        {
            "filters": 6,
            "kernel_size": (3, 2),
            "dilation_rate": (1, 2),
            "padding": "same",
            "groups": 3,
        },
        (2, 5, 6, 3),
    ),
    "conv3d_per_axis_strides": (
        keras.layers.Conv3D,
        {"filters": 2, "kernel_size": 2, "strides": (2, 1, 2)},
        (1, 5, 3, 4, 2),
    ),
    "conv1d_transpose_same_strides2": (
        keras.layers.Conv1DTranspose,
        {"filters": 2, "kernel_size": 4, "strides": 2, "padding": "same"},
        (2, 4, 3),
    ),
    "conv1d_transpose_strides_above_span": (
        keras.layers.Conv1DTranspose,
        {"filters": 2, "kernel_size": 2, "strides": 3},
        (2, 4, 2),
    ),
    "conv2d_transpose_same_output_padding": (
        keras.layers.Conv2DTranspose,
        {
            "filters": 3,
            "kernel_size": (3, 2),
            "strides": (2, 3),
            "padding": "same",
            "output_padding": (0, 1),
        },
        (2, 3, 4, 2),
    ),
    "conv2d_transpose_valid_output_padding": (
        keras.layers.Conv2DTranspose,
        {"filters": 2, "kernel_size": 3, "strides": 2, "output_padding": 1},
        (2, 3, 2, 2),
    ),
    "conv3d_transpose_dilation2": (
        keras.layers.Conv3DTranspose,
        {"filters": 2, "kernel_size": 3, "dilation_rate": (2, 1, 1)},
        (1, 3, 2, 2, 2),
    ),
}


@pytest.mark.parametrize("case_id", list(KERAS_CASES))
def test_convolutions_equal_keras(case_id):
    keras_cls, kwargs, input_shape = KERAS_CASES[case_id]
    x = normal_inputs(input_shape)
    skip_unless_keras_runs(keras_cls, kwargs, x.shape)
    layer = keras_cls(**kwargs, use_bias=False)
    layer.build(x.shape)
    kernel = normal_inputs(tuple(layer.kernel.shape), seed=1)
    layer.set_weights([kernel])
    geometry = {
        k: v for k, v in kwargs.items() if k not in ("filters", "kernel_size")
    }
    if "Transpose" in keras_cls.__name__:
        out = references.conv_transpose(x, kernel, **geometry)
    else:
        out = references.conv(x, kernel, **geometry)
    # float32 sums of at most 18 products of O(1) values in Keras.
    np.testing.assert_allclose(out, to_numpy(layer(x)), rtol=1e-5, atol=1e-5)
