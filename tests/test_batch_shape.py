"""`batch_shape` on the Bayesian layers, and the member-axis rules that every
layer taking a `batch_shape` shares.

A Bayesian layer with a `batch_shape` holds one posterior per member: in
mean mode each member is the Keras layer with that member's locations, its
KL is the sum of the members' KLs, and Flipout draws signs per example,
member and channel. Inputs without member axes go to every member; inputs
with member axes must match `batch_shape`; both train in `fit`.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_bayes as kb
from tests.helpers import assign_posterior, normal_inputs, to_numpy
from tests.keras_support import skip_unless_keras_runs
from tests.layer_test import (
    CONTROL_NAMES,
    POSTERIOR_NAMES,
    keras_counterpart,
    run_layer_test,
)
from tests.members import check_members

STOCHASTIC_BIAS = {
    "bias_posterior": "mean_field_normal",
    "bias_prior": "normal",
}


# -- shared layer checks -------------------------------------------------------

BAYESIAN_CONTRACT_CASES = [
    (
        kb.layers.Conv1DReparameterization,
        {"filters": 3, "kernel_size": 2, "batch_shape": (2, 3)},
        (2, 2, 3, 5, 2),
        (2, 2, 3, 4, 3),
    ),
    (
        kb.layers.Conv2DTransposeFlipout,
        {"filters": 2, "kernel_size": 2, "strides": 2, "batch_shape": (2,)},
        (2, 2, 3, 2, 2),
        (2, 2, 6, 4, 2),
    ),
    (
        kb.layers.DenseFlipout,
        {"units": 3, "batch_shape": (4,)},
        (2, 5),
        (2, 4, 3),
    ),
]


@pytest.mark.parametrize(
    "layer_cls, kwargs, input_shape, output_shape",
    BAYESIAN_CONTRACT_CASES,
    ids=[case[0].__name__ for case in BAYESIAN_CONTRACT_CASES],
)
def test_bayesian_batch_shape_layer_contract(
    layer_cls, kwargs, input_shape, output_shape
):
    run_layer_test(
        layer_cls,
        kwargs,
        input_shape,
        output_shape,
        expected_variable_names=POSTERIOR_NAMES + CONTROL_NAMES,
    )


# -- every member is the Keras layer in mean mode ------------------------------

# `(Bayesian class, conv or dense kwargs, extra Bayesian kwargs, shared input
# shape, batch_shape)`.
BAYESIAN_CASES = [
    pytest.param(
        kb.layers.Conv2DFlipout,
        {"filters": 3, "kernel_size": 2, "strides": 2, "padding": "same"},
        {},
        (2, 5, 4, 2),
        (2, 3),
        id="conv2d_flipout_multi_dim",
    ),
    pytest.param(
        kb.layers.Conv1DReparameterization,
        {"filters": 4, "kernel_size": 2, "groups": 2},
        STOCHASTIC_BIAS,
        (2, 5, 4),
        (2,),
        id="conv1d_reparameterization_groups2_stochastic_bias",
    ),
    pytest.param(
        kb.layers.Conv2DTransposeFlipout,
        {
            "filters": 2,
            "kernel_size": 3,
            "strides": 2,
            "data_format": "channels_first",
        },
        {},
        (2, 3, 4, 5),
        (3,),
        id="conv2d_transpose_flipout_channels_first",
    ),
    pytest.param(
        kb.layers.Conv3DTransposeReparameterization,
        {"filters": 2, "kernel_size": 2, "padding": "same", "strides": 2},
        {},
        (2, 2, 3, 2, 2),
        (2,),
        id="conv3d_transpose_reparameterization",
    ),
    pytest.param(
        kb.layers.DenseFlipout,
        {"units": 3},
        {},
        (4, 5),
        (2, 2),
        id="dense_flipout",
    ),
    pytest.param(
        kb.layers.DenseLocalReparameterization,
        {"units": 3, "activation": "relu"},
        {},
        (4, 5),
        (3,),
        id="dense_local_reparameterization",
    ),
]


def _bayesian_layer(layer_cls, kwargs, bayes_kwargs, shape, **extra):
    """A built layer with members and a distinctive posterior."""
    layer = layer_cls(**kwargs, **bayes_kwargs, **extra)
    layer.build(shape)
    assign_posterior(layer)
    return layer


@pytest.mark.parametrize(
    "layer_cls, kwargs, bayes_kwargs, shape, batch_shape", BAYESIAN_CASES
)
def test_bayesian_mean_members_equal_keras_layers(
    layer_cls, kwargs, bayes_kwargs, shape, batch_shape
):
    # The maps' two member formulations are compared with Keras in
    # test_batched_layers.py; the default one serves here.
    layer = _bayesian_layer(
        layer_cls,
        kwargs,
        bayes_kwargs,
        shape,
        batch_shape=batch_shape,
        posterior_value="mean",
    )
    kernel = to_numpy(layer.kernel_loc)
    bias = to_numpy(layer.bias_loc)
    assert kernel.shape[: len(batch_shape)] == batch_shape
    member_shape = shape[:1] + batch_shape + shape[1:]
    check_members(
        layer,
        keras_counterpart(layer_cls),
        kwargs,
        normal_inputs(shape),
        normal_inputs(member_shape, seed=1),
        lambda index: [kernel[index], bias[index]],
    )


@pytest.mark.parametrize(
    "layer_cls, kwargs, bayes_kwargs, shape, batch_shape", BAYESIAN_CASES
)
def test_kl_is_the_sum_over_members(
    layer_cls, kwargs, bayes_kwargs, shape, batch_shape
):
    skip_unless_keras_runs(keras_counterpart(layer_cls), kwargs, shape)
    layer = _bayesian_layer(
        layer_cls, kwargs, bayes_kwargs, shape, batch_shape=batch_shape
    )
    x = normal_inputs(shape)
    layer(x)
    (kl,) = layer.losses

    # One plain layer per member, holding that member's posterior.
    total = 0.0
    for index in np.ndindex(*batch_shape):
        plain = layer_cls(**kwargs, **bayes_kwargs)
        plain.build(shape)
        for source, target in zip(
            layer.trainable_weights, plain.trainable_weights
        ):
            assert source.name == target.name
            target.assign(to_numpy(source)[index])
        plain(x)
        total += float(to_numpy(plain.losses[0]))
    # float32 sums over a few hundred terms of size ~1.
    np.testing.assert_allclose(float(to_numpy(kl)), total, rtol=1e-5)


# -- Flipout with members ------------------------------------------------------


def test_flipout_signs_per_example_member_and_channel():
    layer = kb.layers.Conv2DTransposeFlipout(
        5, 2, data_format="channels_first", batch_shape=(2, 3)
    )
    linear_map = layer._map
    shared = ops.zeros((4, 3, 6, 7))
    members = ops.zeros((4, 2, 3, 3, 6, 7))
    for inputs in (shared, members):
        sign_in, sign_out = linear_map.factor_shapes(inputs)
        assert tuple(int(d) for d in sign_in) == (4, 2, 3, 3)
        assert tuple(int(d) for d in sign_out) == (4, 2, 3, 5)
        # Broadcast over the spatial axes, after the channel axis.
        view = linear_map._factor_view(ops.ones(sign_in), 6)
        assert tuple(view.shape) == (4, 2, 3, 3, 1, 1)
    # A shared input gets member axes that broadcast against the signs.
    expanded = linear_map.members.expand(shared)
    assert tuple(expanded.shape) == (4, 1, 1, 3, 6, 7)


@pytest.mark.parametrize(
    "layer_cls, kwargs, shape",
    [
        (kb.layers.Conv1DFlipout, {"filters": 2, "kernel_size": 2}, (3, 5, 2)),
        (kb.layers.DenseFlipout, {"units": 2}, (3, 4)),
    ],
    ids=["Conv1DFlipout", "DenseFlipout"],
)
def test_flipout_members_draw_independently(layer_cls, kwargs, shape):
    # Two members with the same posterior and one shared input: their
    # sampled outputs differ (own noise and signs) around the same mean.
    layer = layer_cls(**kwargs, batch_shape=(2,), seed=3)
    layer.build(shape)
    for variable in layer.trainable_weights:
        value = np.random.default_rng(0).normal(size=variable.shape[1:])
        variable.assign(np.stack([value, value]).astype("float32"))
    x = normal_inputs(shape)
    sampled = to_numpy(layer(x))
    assert not np.allclose(sampled[:, 0], sampled[:, 1])
    layer.posterior_value = "mean"
    mean = to_numpy(layer(x))
    np.testing.assert_allclose(mean[:, 0], mean[:, 1], rtol=1e-6)


# -- member inputs, in every layer with members --------------------------------


@pytest.mark.parametrize(
    "layer_cls, kwargs, input_shape",
    [
        (
            kb.layers.BatchedConv2DTranspose,
            {"filters": 2, "kernel_size": 2, "strides": 2},
            (4, 2, 3, 3, 2),
        ),
        (
            kb.layers.Conv2DFlipout,
            {"filters": 4, "kernel_size": 2, "groups": 2},
            (4, 2, 4, 4, 2),
        ),
    ],
    ids=["BatchedConv2DTranspose", "Conv2DFlipout"],
)
def test_fit_with_member_inputs(
    layer_cls, kwargs, input_shape, member_strategy
):
    # Both formulations are differentiable and compile in `fit` (XLA on
    # TensorFlow and JAX, `jit_compile=True`).
    layer = layer_cls(**kwargs, batch_shape=(2,))
    model = keras.Sequential([keras.Input(shape=input_shape[1:]), layer])
    jit = keras.backend.backend() != "torch"
    model.compile(optimizer="sgd", loss="mse", jit_compile=jit)
    x = normal_inputs(input_shape)
    y = normal_inputs((4,) + model.output_shape[1:], seed=1)
    before = [to_numpy(v) for v in model.trainable_weights]
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    after = [to_numpy(v) for v in model.trainable_weights]
    for old, new in zip(before, after):
        assert not np.allclose(old, new)


BAD_BATCH_SHAPES = [(2, 0), (-1,), (2.5,), ("a",), None, (2, None), ((),)]
ALL_BATCH_SHAPE_CLASSES = [
    (kb.layers.Conv2DFlipout, {"filters": 2, "kernel_size": 2}),
    (
        kb.layers.Conv1DTransposeReparameterization,
        {"filters": 2, "kernel_size": 2},
    ),
    (kb.layers.DenseLocalReparameterization, {"units": 2}),
    (kb.layers.BatchedConv3D, {"filters": 2, "kernel_size": 2}),
    (kb.layers.BatchedConv2DTranspose, {"filters": 2, "kernel_size": 2}),
]


@pytest.mark.parametrize(
    "layer_cls, kwargs",
    ALL_BATCH_SHAPE_CLASSES,
    ids=[case[0].__name__ for case in ALL_BATCH_SHAPE_CLASSES],
)
def test_bad_batch_shape(layer_cls, kwargs):
    for value in BAD_BATCH_SHAPES:
        with pytest.raises(ValueError) as info:
            layer_cls(**kwargs, batch_shape=value)
        assert str(info.value) == (
            "Invalid value for argument `batch_shape`. Expected a tuple of "
            "strictly positive integers (or ()). Received: "
            f"batch_shape={value!r}"
        )


@pytest.mark.parametrize(
    "layer_cls, kwargs, feature_shape",
    [
        (kb.layers.BatchedConv2D, {"filters": 2, "kernel_size": 2}, (4, 4, 2)),
        (
            kb.layers.Conv1DTransposeFlipout,
            {"filters": 2, "kernel_size": 2},
            (4, 2),
        ),
        (kb.layers.DenseFlipout, {"units": 2}, (2,)),
    ],
    ids=["BatchedConv2D", "Conv1DTransposeFlipout", "DenseFlipout"],
)
def test_member_axes_must_match_batch_shape(layer_cls, kwargs, feature_shape):
    layer = layer_cls(**kwargs, batch_shape=(2, 3))
    member_ndim = len(feature_shape) + 1
    message = (
        f"with batch_shape=(2, 3) it expects inputs of rank {member_ndim} "
        f"(fed to every member) or of rank {member_ndim + 2} with axes 1 to "
        "2 equal to (2, 3) (one input per member)"
    )
    # At build, from symbolic inputs: swapped member axes, one member axis.
    for members in ((3, 2), (2,)):
        with pytest.raises(ValueError) as info:
            layer(keras.Input(shape=members + feature_shape))
        assert message in str(info.value)
    # At call, after a build.
    layer(np.zeros((1, 2, 3) + feature_shape, "float32"))
    with pytest.raises(ValueError) as info:
        layer(np.zeros((1, 3, 2) + feature_shape, "float32"))
    assert message in str(info.value)


def test_dense_with_batch_shape_takes_rank_2_or_member_inputs():
    layer = kb.layers.DenseFlipout(2, batch_shape=(3,))
    with pytest.raises(ValueError, match="expects inputs of rank 2"):
        layer(np.zeros((4, 5, 6), "float32"))
