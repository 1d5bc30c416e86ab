"""Bayesian `EinsumDense` layers (`EinsumDenseReparameterization`,
`EinsumDenseFlipout`, `EinsumDenseRank1`).

- the shared layer checks on three equations (a dense map, a projection
  over a sequence, a projection to heads with a two-axis bias);
- Keras' kernel and bias shapes, and mean mode equal to
  `keras.layers.EinsumDense` with `kernel = kernel_loc`;
- sample mode: per-element mean and variance of the outputs against a
  float64 NumPy reference (`np.einsum`) of the posterior; Flipout's
  perturbations of two identical examples are uncorrelated, and its signs
  are shared along the free axes (a sequence);
- rank-1: mean mode is the rank-1 formula per member with Keras' layer,
  sample mode has the moments of `s * einsum(x * r, W) + b`;
- the KL against the closed form in NumPy;
- Keras-worded argument errors.
"""

import functools
import re

import keras
import numpy as np
import pytest

import keras_bayes as kb
from tests import references
from tests.helpers import (
    MOMENT_Z,
    assert_sample_moments,
    assign_posterior,
    example_correlation,
    layer_kl,
    normal_inputs,
    randomize_rank1,
    to_numpy,
)
from tests.layer_test import (
    CONTROL_NAMES,
    POSTERIOR_NAMES,
    RANK1_NAMES,
    run_layer_test,
)

# `(id, kwargs, input shape, output shape)`.
EQUATIONS = [
    ("dense", {"equation": "ab,bc->ac", "output_shape": 3, "bias_axes": "c"},
     (4, 5), (4, 3)),
    ("sequence",
     {"equation": "abc,cd->abd", "output_shape": (None, 3), "bias_axes": "d"},
     (2, 4, 5), (2, 4, 3)),
    ("heads",
     {"equation": "abc,cde->abde", "output_shape": (None, 2, 3),
      "bias_axes": "de"},
     (2, 4, 5), (2, 4, 2, 3)),
]  # fmt: skip
CLASSES = [
    kb.layers.EinsumDenseReparameterization,
    kb.layers.EinsumDenseFlipout,
    kb.layers.EinsumDenseRank1,
]


@pytest.mark.parametrize("layer_cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "kwargs, input_shape, output_shape",
    [pytest.param(*case[1:], id=case[0]) for case in EQUATIONS],
)
def test_layer_contract(layer_cls, kwargs, input_shape, output_shape):
    rank1 = layer_cls is kb.layers.EinsumDenseRank1
    # The training, saving and mixed precision checks run on the most
    # general equation (a free axis, two output feature axes, a bias over
    # both); the others check config, build, symbolic and eager calls.
    full = kwargs["equation"] == "abc,cde->abde"
    run_layer_test(
        layer_cls,
        kwargs,
        input_shape,
        output_shape,
        expected_variable_names=(RANK1_NAMES if rank1 else POSTERIOR_NAMES)
        + CONTROL_NAMES,
        run_fit=full,
        run_save=full,
        run_mixed_precision=full,
    )


def test_layer_contract_with_members():
    kwargs = {
        "equation": "abc,cd->abd",
        "output_shape": (None, 3),
        "bias_axes": "d",
        "batch_shape": (2,),
    }
    run_layer_test(
        kb.layers.EinsumDenseRank1,
        kwargs,
        (2, 4, 5),
        (2, 2, 4, 3),
        expected_variable_names=RANK1_NAMES + CONTROL_NAMES,
        run_mixed_precision=False,
    )
    run_layer_test(
        kb.layers.EinsumDenseFlipout,
        kwargs,
        (2, 2, 4, 5),
        (2, 2, 4, 3),
        expected_variable_names=POSTERIOR_NAMES + CONTROL_NAMES,
        run_mixed_precision=False,
    )


# -- mean mode against keras.layers.EinsumDense ------------------------------

MEAN_CASES = [
    ("dense", "ab,bc->ac", 3, "c", (4, 5)),
    ("sequence", "abc,cd->abd", (None, 3), "d", (2, 4, 5)),
    ("heads", "abc,cde->abde", (None, 2, 3), "de", (2, 4, 5)),
    ("bias_over_sequence", "abc,cd->abd", (4, 3), "bd", (2, 4, 5)),
    ("attention_output", "abcd,cde->abe", (None, 3), "e", (2, 4, 2, 5)),
    ("left_ellipsis", "...b,bc->...c", 3, "c", (2, 4, 5)),
    ("right_ellipsis", "abc...,cd->abd...", (None, 3), None, (2, 4, 5, 2)),
    ("no_bias", "abc,cd->abd", (None, 3), None, (2, 4, 5)),
]


@pytest.mark.parametrize("layer_cls", CLASSES[:2], ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "equation, output_shape, bias_axes, input_shape",
    [pytest.param(*case[1:], id=case[0]) for case in MEAN_CASES],
)
def test_mean_mode_is_keras_einsum_dense(
    layer_cls, equation, output_shape, bias_axes, input_shape
):
    layer = layer_cls(
        equation, output_shape, bias_axes=bias_axes, posterior_value="mean"
    )
    keras_layer = keras.layers.EinsumDense(
        equation, output_shape, bias_axes=bias_axes
    )
    layer.build(input_shape)
    keras_layer.build(input_shape)
    assert tuple(layer.kernel_loc.shape) == tuple(keras_layer.kernel.shape)
    if bias_axes is None:
        assert keras_layer.bias is None and not hasattr(layer, "bias_loc")
    else:
        assert tuple(layer.bias_loc.shape) == tuple(keras_layer.bias.shape)
    values = assign_posterior(layer, seed=2)
    keras_layer.kernel.assign(values["kernel_loc"])
    if bias_axes is not None:
        keras_layer.bias.assign(values["bias_loc"])
    x = normal_inputs(input_shape)
    expected = to_numpy(keras_layer(x))
    np.testing.assert_allclose(
        to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-5
    )
    assert tuple(layer.compute_output_shape(input_shape)) == expected.shape


# -- sample mode statistics ---------------------------------------------------

NUM_CALLS = 1000
LOC_STD = 0.5
SCALE_RANGE = (-1.5, 0.5)  # scales in about (0.2, 1)

# `(layer class, kwargs, input shape without batch)`; every case has a free
# sequence axis `b` of length 3.
SAMPLE_CASES = {
    "flipout_sequence": (
        kb.layers.EinsumDenseFlipout,
        {"equation": "abc,cd->abd", "output_shape": (None, 3),
         "bias_axes": "d"},
        (3, 4),
    ),
    "flipout_heads": (
        kb.layers.EinsumDenseFlipout,
        {"equation": "abc,cde->abde", "output_shape": (None, 2, 2),
         "bias_axes": "de"},
        (3, 4),
    ),
    "reparameterization_heads": (
        kb.layers.EinsumDenseReparameterization,
        {"equation": "abc,cde->abde", "output_shape": (None, 2, 2),
         "bias_axes": "e", "bias_posterior": "mean_field_normal"},
        (3, 4),
    ),
    # The batch and sequence axes inside the ellipsis.
    "flipout_left_ellipsis": (
        kb.layers.EinsumDenseFlipout,
        {"equation": "...c,cd->...d", "output_shape": 3, "bias_axes": "d"},
        (3, 4),
    ),
    "flipout_two_members": (
        kb.layers.EinsumDenseFlipout,
        {"equation": "abc,cd->abd", "output_shape": (None, 3),
         "bias_axes": "d", "batch_shape": (2,)},
        (3, 4),
    ),
}  # fmt: skip


@functools.cache
def _draws(case_id):
    """`NUM_CALLS` outputs on a batch `[x0, x0, x1]`, one draw per call.

    Rows 0 and 1 are the same example; in `x1` the sequence positions 0
    and 1 are equal.
    """
    layer_cls, kwargs, feature_shape = SAMPLE_CASES[case_id]
    layer = layer_cls(**kwargs, seed=1234)
    model = keras.Sequential([keras.Input(feature_shape), layer])
    values = assign_posterior(
        layer, seed=5, loc_std=LOC_STD, scale_range=SCALE_RANGE
    )
    x0, x1 = normal_inputs((2,) + feature_shape, seed=6)
    x1[1] = x1[0]
    x = np.stack([x0, x0, x1])
    tiled = np.tile(x, (NUM_CALLS, 1, 1))
    outputs = model.predict(tiled, batch_size=3, verbose=0)
    return x, values, outputs.reshape((NUM_CALLS, 3) + outputs.shape[1:])


def _reference_moments(case_id, x, values):
    """Mean `einsum(x, loc) + bias` and variance `einsum(x**2, scale**2)`
    (+ the bias variance), per member, in float64."""
    _, kwargs, _ = SAMPLE_CASES[case_id]
    equation = kwargs["equation"]
    loc = values["kernel_loc"].astype("float64")
    variance_kernel = (
        references.posterior_scale(values["kernel_untransformed_scale"]) ** 2
    )
    bias = values["bias_loc"].astype("float64")
    bias_variance = 0.0
    if "bias_untransformed_scale" in values:
        bias_variance = (
            references.posterior_scale(values["bias_untransformed_scale"]) ** 2
        )
    x = x.astype("float64")
    if "batch_shape" not in kwargs:
        mean = np.einsum(equation, x, loc) + bias
        variance = np.einsum(equation, x**2, variance_kernel) + bias_variance
        return mean, variance
    means, variances = [], []
    for member in range(kwargs["batch_shape"][0]):
        means.append(np.einsum(equation, x, loc[member]) + bias[member])
        variances.append(np.einsum(equation, x**2, variance_kernel[member]))
    return np.stack(means, axis=1), np.stack(variances, axis=1)


@pytest.mark.slow
@pytest.mark.parametrize("case_id", list(SAMPLE_CASES))
def test_sample_mode_moments(case_id):
    x, values, outputs = _draws(case_id)
    mean, variance = _reference_moments(case_id, x, values)
    assert outputs.shape[1:] == mean.shape
    assert_sample_moments(outputs, mean, variance, normal=True)


@pytest.mark.slow
@pytest.mark.parametrize("case_id", list(SAMPLE_CASES))
def test_identical_examples_in_one_batch(case_id):
    layer_cls = SAMPLE_CASES[case_id][0]
    x, values, outputs = _draws(case_id)
    if layer_cls is kb.layers.EinsumDenseReparameterization:
        # One kernel per call: the two copies see the same weights.
        np.testing.assert_array_equal(outputs[:, 0], outputs[:, 1])
        return
    mean, _ = _reference_moments(case_id, x, values)
    correlation = example_correlation(outputs, mean)
    # Under zero correlation, the sample correlation of two Flipout
    # perturbations has standard deviation at most sqrt(3 / n)
    # (tests/test_estimator_statistics.py derives the bound).
    bound = MOMENT_Z * np.sqrt(3.0 / NUM_CALLS)
    assert np.max(np.abs(correlation)) < bound, correlation


@pytest.mark.slow
@pytest.mark.parametrize("case_id", list(SAMPLE_CASES))
def test_signs_are_shared_along_the_sequence(case_id):
    # Example 2 has equal inputs at sequence positions 0 and 1: with one
    # kernel draw per call and signs per example and feature (not per
    # position), its outputs there are equal on every call.
    _, _, outputs = _draws(case_id)
    member_axes = len(SAMPLE_CASES[case_id][1].get("batch_shape", ()))
    example = outputs[:, 2]
    position = (slice(None),) * (1 + member_axes)
    np.testing.assert_allclose(
        example[position + (0,)], example[position + (1,)], rtol=1e-5,
        atol=1e-5,
    )  # fmt: skip
    # Different inputs would give different outputs: the check has teeth.
    assert not np.allclose(example[position + (0,)], example[position + (2,)])


# -- rank-1 ------------------------------------------------------------------

RANK1_KWARGS = {
    "equation": "abc,cde->abde",
    "output_shape": (None, 2, 2),
    "bias_axes": "de",
}


def _keras_member(layer, x, member):
    """`EinsumDense(x * alpha[b]) * gamma[b] + bias[b]` with Keras' layer."""
    reference = keras.layers.EinsumDense(
        RANK1_KWARGS["equation"], RANK1_KWARGS["output_shape"]
    )
    reference.build(x.shape)
    reference.kernel.assign(to_numpy(layer.kernel))
    alpha = to_numpy(layer.alpha_loc)[member]
    gamma = to_numpy(layer.gamma_loc)[member]
    bias = to_numpy(layer.bias)[member]
    return to_numpy(reference(x * alpha)) * gamma + bias


def test_rank1_mean_mode_is_the_formula_per_member():
    shape = (3, 4, 5)
    layer = kb.layers.EinsumDenseRank1(
        **RANK1_KWARGS, batch_shape=(2,), posterior_value="mean"
    )
    layer.build(shape)
    keras_layer = keras.layers.EinsumDense(**RANK1_KWARGS)
    keras_layer.build(shape)
    assert tuple(layer.kernel.shape) == tuple(keras_layer.kernel.shape)
    assert tuple(layer.bias.shape) == (2,) + tuple(keras_layer.bias.shape)
    assert tuple(layer.alpha_loc.shape) == (2, 5)
    assert tuple(layer.gamma_loc.shape) == (2, 2, 2)
    randomize_rank1(layer)
    x = normal_inputs(shape)
    x_members = normal_inputs(shape[:1] + (2,) + shape[1:], seed=1)
    shared, per_member = to_numpy(layer(x)), to_numpy(layer(x_members))
    for member in range(2):
        np.testing.assert_allclose(
            shared[:, member],
            _keras_member(layer, x, member),
            rtol=1e-5,
            atol=1e-5,
        )
        np.testing.assert_allclose(
            per_member[:, member],
            _keras_member(layer, x_members[:, member], member),
            rtol=1e-5,
            atol=1e-5,
        )
    assert not np.allclose(shared[:, 0], shared[:, 1])


def test_rank1_kernel_is_keras_point_estimate():
    layer = kb.layers.EinsumDenseRank1(
        **RANK1_KWARGS,
        batch_shape=(3,),
        kernel_initializer=keras.initializers.Constant(0.5),
        kernel_regularizer=keras.regularizers.L2(0.1),
    )
    layer.build((2, 4, 5))
    kernel = to_numpy(layer.kernel)
    np.testing.assert_array_equal(kernel, np.full((5, 2, 2), 0.5))
    layer(normal_inputs((2, 4, 5)))
    np.testing.assert_allclose(
        float(to_numpy(layer.losses[-1])), 0.1 * np.sum(kernel**2), 1e-6
    )


def test_rank1_default_kernel_has_keras_fan():
    # Keras' EinsumDense gives its glorot initializer the kernel's fan
    # axes: fan_in 5 and fan_out 2 * 3 here, a limit sqrt(6 / 11).
    layer = kb.layers.EinsumDenseRank1("abc,cde->abde", (None, 2, 3), seed=0)
    layer.build((2, 4, 5))
    kernel = to_numpy(layer.kernel)
    limit = np.sqrt(6.0 / (5 + 6))
    assert np.max(np.abs(kernel)) <= limit
    assert np.max(np.abs(kernel)) > 0.6 * limit


@functools.cache
def _rank1_draws():
    layer = kb.layers.EinsumDenseRank1(**RANK1_KWARGS, seed=11)
    model = keras.Sequential([keras.Input((3, 4)), layer])
    randomize_rank1(layer, seed=3)
    x0, x1 = normal_inputs((2, 3, 4), seed=4)
    x = np.stack([x0, x0, x1])
    tiled = np.tile(x, (NUM_CALLS, 1, 1))
    outputs = model.predict(tiled, batch_size=3, verbose=0)
    return layer, x, outputs.reshape((NUM_CALLS, 3) + outputs.shape[1:])


@pytest.mark.slow
def test_rank1_sample_mode_moments():
    # y = s * z + b with z = sum_c r_c A_c, A_c = x_c W_c (one input
    # feature at a time), r ~ N(a, sa**2), s ~ N(g, sg**2) independent:
    # E = g E[z] + b, Var = (g**2 + sg**2) (E[z]**2 + Var z) - g**2 E[z]**2.
    layer, x, outputs = _rank1_draws()
    kernel = to_numpy(layer.kernel).astype("float64")
    parts = np.einsum("nbc,cde->nbdec", x.astype("float64"), kernel)
    a = to_numpy(layer.alpha_loc).astype("float64")
    sa = references.posterior_scale(to_numpy(layer.alpha_untransformed_scale))
    g = to_numpy(layer.gamma_loc).astype("float64")
    sg = references.posterior_scale(to_numpy(layer.gamma_untransformed_scale))
    bias = to_numpy(layer.bias).astype("float64")
    mean_z = parts @ a
    var_z = parts**2 @ sa**2
    mean = g * mean_z + bias
    variance = (g**2 + sg**2) * (mean_z**2 + var_z) - g**2 * mean_z**2
    assert_sample_moments(outputs, mean, variance, normal=False)
    # Identical examples draw their own factors: uncorrelated.
    correlation = example_correlation(outputs, mean)
    # Independent draws: sample correlation ~ N(0, 1 / n).
    assert np.max(np.abs(correlation)) < MOMENT_Z / np.sqrt(NUM_CALLS)


# -- KL ----------------------------------------------------------------------


@pytest.mark.parametrize("layer_cls", CLASSES[:2], ids=lambda c: c.__name__)
def test_kl_is_the_closed_form(layer_cls):
    layer = layer_cls(
        "abc,cde->abde",
        (None, 2, 3),
        bias_axes="de",
        bias_posterior="mean_field_normal",
        bias_prior=kb.priors.Normal(0.5, 2.0),
        kl_weight=0.25,
    )
    layer.build((2, 4, 5))
    assign_posterior(layer, seed=3, loc_std=0.5, scale_range=(-2.0, 0.5))
    layer(normal_inputs((2, 4, 5)))
    np.testing.assert_allclose(
        float(to_numpy(layer.losses[0])), 0.25 * layer_kl(layer), rtol=1e-5
    )


def test_rank1_kl_is_the_closed_form():
    layer = kb.layers.EinsumDenseRank1(
        **RANK1_KWARGS, batch_shape=(2,), kl_weight=0.5
    )
    layer.build((2, 4, 5))
    randomize_rank1(layer, seed=7)
    layer(normal_inputs((2, 4, 5)))
    expected = 0.0
    for name in ("alpha", "gamma"):
        prior = getattr(layer, f"{name}_prior")
        expected += references.normal_kl(
            to_numpy(getattr(layer, f"{name}_loc")),
            references.posterior_scale(
                to_numpy(getattr(layer, f"{name}_untransformed_scale"))
            ),
            prior.loc,
            prior.scale,
        )
    np.testing.assert_allclose(
        float(to_numpy(layer.losses[0])), 0.5 * expected, rtol=1e-5
    )


# -- errors ------------------------------------------------------------------

CONSTRUCTION_ERRORS = [
    (
        "not_an_equation",
        {"equation": "ab->c", "output_shape": 3},
        "Invalid value for argument `equation`. Expected an einsum equation "
        "of the form 'X,Y->Z', '...X,Y->...Z' or 'X...,Y->Z...', with "
        "letters for axes (e.g. 'abc,cd->abd'). Received: equation='ab->c'",
    ),
    (
        "kernel_axis_nowhere",
        {"equation": "ab,bcx->ac", "output_shape": 3},
        "Invalid value for argument `equation`. Kernel axis 'x' is neither an "
        "input axis ('ab') nor an output axis ('ac'): the kernel must be "
        "fully specified. Received: equation='ab,bcx->ac'",
    ),
    (
        "output_axis_nowhere",
        {"equation": "ab,bc->acx", "output_shape": (3, 2)},
        "Invalid value for argument `equation`. Output axis 'x' is neither an "
        "input axis ('ab') nor a kernel axis ('bc'). "
        "Received: equation='ab,bc->acx'",
    ),
    (
        "batch_axis_in_kernel",
        {"equation": "ab,ab->ab", "output_shape": 3},
        "Invalid value for argument `equation`. Expected the batch axis (the "
        "input's first, 'a') to be the output's first axis and not a kernel "
        "axis. Received: equation='ab,ab->ab'",
    ),
    (
        "output_shape_length",
        {"equation": "abc,cd->abd", "output_shape": 3},
        "Invalid value for argument `output_shape`. Expected 2 positive ints "
        "or None, the output shape without the batch axis (and without the "
        "ellipsis' axes), for the output axes 'abd'. Received: "
        "output_shape=3",
    ),
    (
        "kernel_output_size_unknown",
        {"equation": "abc,cd->abd", "output_shape": (None, None)},
        "Invalid value for argument `output_shape`. Expected a size for "
        "output axis 'd', an axis of the kernel (equation 'abc,cd->abd'). "
        "Received: output_shape=(None, None)",
    ),
    (
        "bias_axes_not_in_output",
        {"equation": "abc,cd->abd", "output_shape": (None, 3),
         "bias_axes": "c"},
        "Invalid value for argument `bias_axes`. Expected a string of output "
        "axis letters (of 'abd' in equation 'abc,cd->abd'), or None. "
        "Received: bias_axes='c'",
    ),
    (
        "members_with_ellipsis",
        {"equation": "...b,bc->...c", "output_shape": 3,
         "batch_shape": (2,)},
        "Invalid value for argument `batch_shape`. Members need an equation "
        "without an ellipsis (the member axes follow the batch axis). "
        "Equation: '...b,bc->...c'. Received: batch_shape=(2,)",
    ),
]  # fmt: skip


@pytest.mark.parametrize("layer_cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "kwargs, message",
    [pytest.param(*case[1:], id=case[0]) for case in CONSTRUCTION_ERRORS],
)
def test_argument_errors(layer_cls, kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        layer_cls(**kwargs)


@pytest.mark.parametrize("layer_cls", CLASSES, ids=lambda c: c.__name__)
def test_input_errors_at_build(layer_cls):
    layer = layer_cls("abc,cd->abd", (6, 3), bias_axes="d")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Invalid value for argument `output_shape`. Expected size 4 at "
            "output axis 'b', the input's size there (input shape (2, 4, 5), "
            "equation 'abc,cd->abd'). Received: output_shape=(6, 3)"
        ),
    ):
        layer.build((2, 4, 5))
    assert not layer.built
    with pytest.raises(
        ValueError,
        match=re.escape(
            "expected ndim=3 (equation 'abc,cd->abd'), found ndim=2. Full "
            "shape received: (2, 5)"
        ),
    ):
        layer(normal_inputs((2, 5)))
    with pytest.raises(ValueError, match="Found None"):
        layer_cls("abc,cd->abd", (None, 3))(keras.Input((4, None)))
