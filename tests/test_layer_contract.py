"""Every Bayesian conv and dense layer passes the shared layer checks."""

import pytest

import keras_bayes as kb
from tests.layer_test import CONTROL_NAMES, POSTERIOR_NAMES, run_layer_test

CONV_CASES = [
    (kb.layers.Conv1DReparameterization, (2, 7, 3), (2, 5, 4)),
    (kb.layers.Conv1DFlipout, (2, 7, 3), (2, 5, 4)),
    (kb.layers.Conv2DReparameterization, (2, 6, 5, 3), (2, 4, 3, 4)),
    (kb.layers.Conv2DFlipout, (2, 6, 5, 3), (2, 4, 3, 4)),
    (kb.layers.Conv3DReparameterization, (2, 5, 4, 4, 2), (2, 3, 2, 2, 4)),
    (kb.layers.Conv3DFlipout, (2, 5, 4, 4, 2), (2, 3, 2, 2, 4)),
]


@pytest.mark.parametrize(
    "layer_cls, input_shape, output_shape",
    CONV_CASES,
    ids=[c[0].__name__ for c in CONV_CASES],
)
def test_conv_layer_contract(layer_cls, input_shape, output_shape):
    run_layer_test(
        layer_cls,
        {"filters": 4, "kernel_size": 3},
        input_shape,
        output_shape,
        expected_variable_names=POSTERIOR_NAMES + CONTROL_NAMES,
    )


DENSE_CASES = [
    kb.layers.DenseReparameterization,
    kb.layers.DenseFlipout,
    kb.layers.DenseLocalReparameterization,
]


@pytest.mark.parametrize(
    "layer_cls", DENSE_CASES, ids=[c.__name__ for c in DENSE_CASES]
)
def test_dense_layer_contract(layer_cls):
    run_layer_test(
        layer_cls,
        {"units": 3},
        (4, 5),
        (4, 3),
        expected_variable_names=POSTERIOR_NAMES + CONTROL_NAMES,
    )


def test_stochastic_bias_and_no_bias_variables():
    run_layer_test(
        kb.layers.Conv2DFlipout,
        {
            "filters": 2,
            "kernel_size": 2,
            "bias_posterior": "mean_field_normal",
            "bias_prior": "normal",
        },
        (2, 4, 4, 3),
        (2, 3, 3, 2),
        expected_variable_names=POSTERIOR_NAMES
        + ["bias_untransformed_scale"]
        + CONTROL_NAMES,
    )
    run_layer_test(
        kb.layers.DenseFlipout,
        {"units": 2, "use_bias": False},
        (3, 4),
        (3, 2),
        expected_variable_names=POSTERIOR_NAMES[:2] + CONTROL_NAMES,
        run_mixed_precision=False,
    )
