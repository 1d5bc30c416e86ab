"""Batches of weights: `BatchedConvND(Transpose)` and `batch_shape` on the
Bayesian layers.

Every member must compute what the plain Keras layer with that member's
weights computes, for an input shared by all members `(N, *spatial, C)` and
for one input per member `(N, *batch_shape, *spatial, C)`. Members that
each have their own input run through one of two formulations (one grouped
convolution, or one convolution per member; `kb.config.set_member_strategy`):
the parity tests run both on every backend (TensorFlow runs transposed
convolutions per member under either setting).
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_bayes as kb
from tests.keras_support import skip_unless_keras_runs
from tests.layer_test import KERAS_CONV, randomize_posterior, run_layer_test

BATCHED_CLASSES = {
    (1, False): kb.layers.BatchedConv1D,
    (2, False): kb.layers.BatchedConv2D,
    (3, False): kb.layers.BatchedConv3D,
    (1, True): kb.layers.BatchedConv1DTranspose,
    (2, True): kb.layers.BatchedConv2DTranspose,
    (3, True): kb.layers.BatchedConv3DTranspose,
}
POSTERIOR_NAMES = ["kernel_loc", "kernel_untransformed_scale", "bias_loc"]
CONTROL_NAMES = ["kl_weight", "posterior_sample"]
# float32 sums of a few dozen O(1) products on both sides.
RTOL = 1e-5
ATOL = 1e-5
SPATIAL = (5, 4, 3)


@pytest.fixture(params=["grouped", "per_member"])
def member_strategy(request):
    kb.config.set_member_strategy(request.param)
    yield request.param
    kb.config.set_member_strategy(None)


def _to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def _inputs(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _input_shapes(rank, channels, data_format, batch_shape):
    """`(shared input shape, per-member input shape)`, batch of 2."""
    spatial = SPATIAL[:rank]
    if data_format == "channels_first":
        member = (channels, *spatial)
    else:
        member = (*spatial, channels)
    return (2, *member), (2, *batch_shape, *member)


def _member(array, index):
    return array[(slice(None),) + index]


def _check_members(layer, reference_cls, kwargs, x, x_members, weights):
    """Each member of `layer` equals `reference_cls` with its weights.

    `weights(index)` gives a member's Keras weights. In channels_first cases
    the last output spatial size differs from `filters`: for those shapes
    `keras.ops.add` on TensorFlow would add the reference's bias along the
    last axis.
    """
    skip_unless_keras_runs(reference_cls, kwargs, x.shape)
    shared = _to_numpy(layer(x))
    per_member = _to_numpy(layer(x_members))
    batch_shape = layer.batch_shape
    assert shared.shape == tuple(layer.compute_output_shape(x.shape))
    assert per_member.shape == tuple(
        layer.compute_output_shape(x_members.shape)
    )
    for index in np.ndindex(*batch_shape):
        reference = reference_cls(**kwargs)
        reference.build(x.shape)
        reference.set_weights(weights(index))
        expected = _to_numpy(reference(x))
        if kwargs.get("data_format") == "channels_first" and kwargs.get(
            "use_bias", True
        ):
            assert expected.shape[-1] != kwargs["filters"], "ambiguous bias"
        np.testing.assert_allclose(
            _member(shared, index), expected, rtol=RTOL, atol=ATOL
        )
        np.testing.assert_allclose(
            _member(per_member, index),
            _to_numpy(reference(_member(x_members, index))),
            rtol=RTOL,
            atol=ATOL,
        )
    # Members differ (a broadcast of member 0 would pass the shape checks).
    assert not np.allclose(
        _member(shared, (0,) * len(batch_shape)),
        _member(shared, (1,) + (0,) * (len(batch_shape) - 1)),
    )


# -- batched layers: every member is the Keras layer ------------------------

# `(id, rank, transpose, kwargs, input channels, batch_shape)`.
BATCHED_CASES = [
    ("conv1d_defaults", 1, False, {"filters": 3, "kernel_size": 2}, 2, (2,)),
    (
        "conv1d_causal_dilation2_relu",
        1,
        False,
        {
            "filters": 3,
            "kernel_size": 3,
            "padding": "causal",
            "dilation_rate": 2,
            "activation": "relu",
        },
        2,
        (3,),
    ),
    (
        "conv1d_groups2_channels_first_strides2",
        1,
        False,
        {
            "filters": 4,
            "kernel_size": 2,
            "groups": 2,
            "strides": 2,
            "data_format": "channels_first",
        },
        4,
        (2,),
    ),
    (
        "conv2d_multi_dim_batch_shape",
        2,
        False,
        {"filters": 3, "kernel_size": 2},
        2,
        (2, 3),
    ),
    (
        "conv2d_groups2_strides2_same",
        2,
        False,
        {
            "filters": 4,
            "kernel_size": 3,
            "groups": 2,
            "strides": 2,
            "padding": "same",
        },
        6,
        (2,),
    ),
    (
        "conv2d_channels_first_dilation2_no_bias",
        2,
        False,
        {
            "filters": 3,
            "kernel_size": 2,
            "dilation_rate": (2, 1),
            "data_format": "channels_first",
            "use_bias": False,
        },
        2,
        (2,),
    ),
    (
        "conv3d_per_axis_strides",
        3,
        False,
        {"filters": 2, "kernel_size": (3, 2, 2), "strides": (2, 1, 1)},
        2,
        (2,),
    ),
    (
        "conv3d_channels_first_groups2",
        3,
        False,
        {
            "filters": 4,
            "kernel_size": 2,
            "groups": 2,
            "data_format": "channels_first",
        },
        4,
        (2,),
    ),
    (
        "transpose1d_strides2_same_output_padding1",
        1,
        True,
        {
            "filters": 3,
            "kernel_size": 3,
            "strides": 2,
            "padding": "same",
            "output_padding": 1,
        },
        2,
        (2,),
    ),
    (
        "transpose1d_channels_first_dilation2",
        1,
        True,
        {
            "filters": 2,
            "kernel_size": 2,
            "dilation_rate": 2,
            "data_format": "channels_first",
        },
        3,
        (3,),
    ),
    (
        "transpose2d_multi_dim_batch_shape",
        2,
        True,
        {"filters": 3, "kernel_size": 2, "strides": 2},
        2,
        (2, 3),
    ),
    (
        "transpose2d_channels_first_per_axis_output_padding",
        2,
        True,
        {
            "filters": 2,
            "kernel_size": 3,
            "strides": (3, 2),
            "output_padding": (2, 0),
            "data_format": "channels_first",
            "activation": "tanh",
        },
        2,
        (2,),
    ),
    (
        "transpose3d_strides2_valid",
        3,
        True,
        {"filters": 2, "kernel_size": 2, "strides": (2, 1, 2)},
        2,
        (2,),
    ),
    (
        "transpose3d_channels_first_same",
        3,
        True,
        {
            "filters": 2,
            "kernel_size": 3,
            "padding": "same",
            "data_format": "channels_first",
        },
        2,
        (2,),
    ),
]


@pytest.mark.parametrize(
    "rank, transpose, kwargs, channels, batch_shape",
    [pytest.param(*case[1:], id=case[0]) for case in BATCHED_CASES],
)
def test_batched_members_equal_keras_layers(
    rank, transpose, kwargs, channels, batch_shape, member_strategy
):
    shape, member_shape = _input_shapes(
        rank, channels, kwargs.get("data_format"), batch_shape
    )
    layer = BATCHED_CLASSES[rank, transpose](
        **kwargs, batch_shape=batch_shape, bias_initializer="random_normal"
    )
    layer.build(shape)
    kernel = _to_numpy(layer.kernel)
    bias = _to_numpy(layer.bias) if layer.bias is not None else None

    def weights(index):
        if bias is None:
            return [kernel[index]]
        return [kernel[index], bias[index]]

    _check_members(
        layer,
        KERAS_CONV[rank, transpose],
        kwargs,
        _inputs(shape),
        _inputs(member_shape, seed=1),
        weights,
    )


@pytest.mark.parametrize(
    "rank, transpose",
    list(KERAS_CONV),
    ids=[cls.__name__ for cls in KERAS_CONV.values()],
)
def test_empty_batch_shape_is_the_keras_layer(rank, transpose):
    kwargs = {
        "filters": 3,
        "kernel_size": 2,
        "strides": 2,
        "padding": "same",
        "kernel_initializer": keras.initializers.GlorotUniform(seed=3),
        "bias_initializer": keras.initializers.RandomNormal(seed=4),
        "kernel_regularizer": keras.regularizers.L2(0.1),
        "bias_regularizer": keras.regularizers.L1(0.2),
        "kernel_constraint": keras.constraints.MaxNorm(2.0),
    }
    keras_layer = KERAS_CONV[rank, transpose](**kwargs)
    layer = BATCHED_CLASSES[rank, transpose](**kwargs)
    x = _inputs((2, *SPATIAL[:rank], 2))
    keras_out, out = _to_numpy(keras_layer(x)), _to_numpy(layer(x))

    # Same variables, initial values, outputs and regularization losses.
    assert [v.name for v in layer.weights] == ["kernel", "bias"]
    for ours, theirs in zip(layer.weights, keras_layer.weights):
        np.testing.assert_array_equal(_to_numpy(ours), _to_numpy(theirs))
    np.testing.assert_allclose(out, keras_out, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        [_to_numpy(loss) for loss in layer.losses],
        [_to_numpy(loss) for loss in keras_layer.losses],
        rtol=1e-6,
    )
    # The Keras config, plus `batch_shape`, and Keras configs load.
    config = layer.get_config()
    keras_config = keras_layer.get_config()
    assert config.pop("batch_shape") == ()
    for key in ("name", "lora_rank"):
        config.pop(key, None)
        keras_config.pop(key, None)
    assert config == keras_config
    revived = type(layer).from_config(keras_layer.get_config())
    assert revived.get_config()["kernel_size"] == (2,) * rank


def test_member_initializer_uses_one_members_fans():
    layer = kb.layers.BatchedConv2D(6, 3, batch_shape=(2, 4))
    layer.build((None, 8, 8, 5))
    kernel = _to_numpy(layer.kernel)
    assert kernel.shape == (2, 4, 3, 3, 5, 6)
    # Glorot uniform over one member's fans: (5 + 6) * 9.
    limit = np.sqrt(6.0 / ((5 + 6) * 9))
    members = kernel.reshape(8, -1)
    assert np.all(np.abs(members) <= limit)
    # 270 uniform draws per member: the largest falls below 0.9 * limit
    # with probability 0.9**270 ~ 5e-13; the whole-batch fans would give a
    # limit sqrt(8) times smaller.
    assert np.all(np.max(np.abs(members), axis=1) > 0.9 * limit)
    # Members start different from each other.
    for i in range(8):
        for j in range(i):
            assert not np.allclose(members[i], members[j])


def test_seeded_member_initializer_is_reproducible():
    def kernel(seed):
        layer = kb.layers.BatchedConv1D(
            2,
            3,
            batch_shape=(3,),
            kernel_initializer=keras.initializers.HeNormal(seed=seed),
        )
        layer.build((None, 6, 2))
        return _to_numpy(layer.kernel)

    first, second, other = kernel(7), kernel(7), kernel(8)
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, other)
    assert not np.allclose(first[0], first[1])


def test_regularizers_and_constraints_act_per_member():
    def squared_sum(weights):
        # Not a sum over elements: per member it differs from the whole.
        return ops.square(ops.sum(weights))

    max_norm = keras.constraints.MaxNorm(0.5, axis=[0, 1, 2])
    layer = kb.layers.BatchedConv2D(
        3,
        2,
        batch_shape=(2, 2),
        kernel_regularizer="l2",
        bias_regularizer=squared_sum,
        kernel_constraint=max_norm,
        bias_constraint="non_neg",
        bias_initializer="random_normal",
    )
    layer.build((None, 4, 4, 2))
    kernel, bias = _to_numpy(layer.kernel), _to_numpy(layer.bias)
    members = [index for index in np.ndindex(2, 2)]
    # L2 (Keras default 0.01) sums over elements: over all members at once.
    expected_l2 = sum(
        _to_numpy(keras.regularizers.L2()(kernel[i])) for i in members
    )
    expected_squared_sum = sum(np.sum(bias[i]) ** 2 for i in members)
    np.testing.assert_allclose(
        sorted(_to_numpy(loss) for loss in layer.losses),
        sorted([expected_l2, expected_squared_sum]),
        rtol=1e-5,
    )
    constrained = _to_numpy(layer.kernel.constraint(layer.kernel))
    for index in members:
        np.testing.assert_allclose(
            constrained[index],
            _to_numpy(max_norm(kernel[index])),
            rtol=1e-6,
        )
    assert np.all(_to_numpy(layer.bias.constraint(layer.bias)) >= 0)


def test_batched_config_and_attributes():
    layer = kb.layers.BatchedConv2DTranspose(
        4, 3, strides=2, output_padding=1, batch_shape=[2, 3]
    )
    assert layer.batch_shape == (2, 3)
    assert layer.output_padding == (1, 1)
    config = layer.get_config()
    assert config["batch_shape"] == (2, 3)
    assert "groups" not in config
    layer.build((None, 2, 3, 5, 5, 6))
    assert tuple(layer.kernel.shape) == (2, 3, 3, 3, 4, 6)
    assert tuple(layer.bias.shape) == (2, 3, 4)
    conv = kb.layers.BatchedConv1D(4, 3, groups=2, batch_shape=5)
    assert conv.groups == 2 and conv.batch_shape == (5,)
    conv.build((None, 7, 6))
    assert tuple(conv.kernel.shape) == (5, 3, 3, 4)


# -- shared layer checks ------------------------------------------------------

# `(class, kwargs, input shape, output shape)`.
BATCHED_CONTRACT_CASES = [
    (
        kb.layers.BatchedConv1D,
        {"filters": 3, "kernel_size": 2, "batch_shape": (2,)},
        (2, 5, 2),
        (2, 2, 4, 3),
    ),
    (
        kb.layers.BatchedConv2D,
        {"filters": 4, "kernel_size": 3, "groups": 2, "batch_shape": (2, 2)},
        (2, 2, 2, 5, 4, 4),
        (2, 2, 2, 3, 2, 4),
    ),
    (
        kb.layers.BatchedConv3D,
        {"filters": 2, "kernel_size": 2, "batch_shape": (2,)},
        (2, 3, 3, 2, 2),
        (2, 2, 2, 2, 1, 2),
    ),
    (
        kb.layers.BatchedConv1DTranspose,
        {"filters": 3, "kernel_size": 2, "strides": 2, "batch_shape": (3,)},
        (2, 3, 4, 2),
        (2, 3, 8, 3),
    ),
    (
        kb.layers.BatchedConv2DTranspose,
        {
            "filters": 2,
            "kernel_size": 3,
            "padding": "same",
            "strides": 2,
            "batch_shape": (2,),
        },
        (2, 3, 2, 3),
        (2, 2, 6, 4, 2),
    ),
    (
        kb.layers.BatchedConv3DTranspose,
        {"filters": 2, "kernel_size": 2, "batch_shape": (2,)},
        (2, 2, 2, 2, 2, 2),
        (2, 2, 3, 3, 3, 2),
    ),
]


@pytest.mark.parametrize(
    "layer_cls, kwargs, input_shape, output_shape",
    BATCHED_CONTRACT_CASES,
    ids=[case[0].__name__ for case in BATCHED_CONTRACT_CASES],
)
def test_batched_layer_contract(layer_cls, kwargs, input_shape, output_shape):
    run_layer_test(
        layer_cls,
        kwargs,
        input_shape,
        output_shape,
        expected_variable_names=["kernel", "bias"],
    )


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
    x = _inputs(input_shape)
    y = _inputs((4,) + model.output_shape[1:], seed=1)
    before = [_to_numpy(v) for v in model.trainable_weights]
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    after = [_to_numpy(v) for v in model.trainable_weights]
    for old, new in zip(before, after):
        assert not np.allclose(old, new)


# -- Bayesian layers with a batch_shape ---------------------------------------


# `(id, Bayesian class, Keras class, kwargs, shared input shape,
# batch_shape)`.
BAYESIAN_CASES = [
    (
        "conv2d_flipout_multi_dim",
        kb.layers.Conv2DFlipout,
        keras.layers.Conv2D,
        {"filters": 3, "kernel_size": 2, "strides": 2, "padding": "same"},
        (2, 5, 4, 2),
        (2, 3),
    ),
    (
        "conv1d_reparameterization_groups2_stochastic_bias",
        kb.layers.Conv1DReparameterization,
        keras.layers.Conv1D,
        {"filters": 4, "kernel_size": 2, "groups": 2},
        (2, 5, 4),
        (2,),
    ),
    (
        "conv2d_transpose_flipout_channels_first",
        kb.layers.Conv2DTransposeFlipout,
        keras.layers.Conv2DTranspose,
        {
            "filters": 2,
            "kernel_size": 3,
            "strides": 2,
            "data_format": "channels_first",
        },
        (2, 3, 4, 5),
        (3,),
    ),
    (
        "conv3d_transpose_reparameterization",
        kb.layers.Conv3DTransposeReparameterization,
        keras.layers.Conv3DTranspose,
        {"filters": 2, "kernel_size": 2, "padding": "same", "strides": 2},
        (2, 2, 3, 2, 2),
        (2,),
    ),
    (
        "dense_flipout",
        kb.layers.DenseFlipout,
        keras.layers.Dense,
        {"units": 3},
        (4, 5),
        (2, 2),
    ),
    (
        "dense_local_reparameterization",
        kb.layers.DenseLocalReparameterization,
        keras.layers.Dense,
        {"units": 3, "activation": "relu"},
        (4, 5),
        (3,),
    ),
]


def _bayesian_case(case_id):
    case = next(case for case in BAYESIAN_CASES if case[0] == case_id)
    _, layer_cls, keras_cls, kwargs, shape, batch_shape = case
    bayes_kwargs = {}
    if "stochastic_bias" in case_id:
        bayes_kwargs = {
            "bias_posterior": "mean_field_normal",
            "bias_prior": "normal",
        }
    return layer_cls, keras_cls, kwargs, bayes_kwargs, shape, batch_shape


BAYESIAN_IDS = [case[0] for case in BAYESIAN_CASES]


@pytest.mark.parametrize("case_id", BAYESIAN_IDS)
def test_bayesian_mean_members_equal_keras_layers(case_id):
    # The maps' two member formulations are compared with Keras above; the
    # default one serves here.
    layer_cls, keras_cls, kwargs, bayes_kwargs, shape, batch_shape = (
        _bayesian_case(case_id)
    )
    layer = layer_cls(
        **kwargs,
        **bayes_kwargs,
        batch_shape=batch_shape,
        posterior_value="mean",
    )
    layer.build(shape)
    randomize_posterior(layer)
    kernel = _to_numpy(layer.kernel_loc)
    bias = _to_numpy(layer.bias_loc)
    assert kernel.shape[: len(batch_shape)] == batch_shape
    member_shape = shape[:1] + batch_shape + shape[1:]
    _check_members(
        layer,
        keras_cls,
        kwargs,
        _inputs(shape),
        _inputs(member_shape, seed=1),
        lambda index: [kernel[index], bias[index]],
    )


@pytest.mark.parametrize("case_id", BAYESIAN_IDS)
def test_kl_is_the_sum_over_members(case_id):
    layer_cls, keras_cls, kwargs, bayes_kwargs, shape, batch_shape = (
        _bayesian_case(case_id)
    )
    skip_unless_keras_runs(keras_cls, kwargs, shape)
    layer = layer_cls(**kwargs, **bayes_kwargs, batch_shape=batch_shape)
    layer.build(shape)
    randomize_posterior(layer)
    x = _inputs(shape)
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
            target.assign(_to_numpy(source)[index])
        plain(x)
        total += float(_to_numpy(plain.losses[0]))
    # float32 sums over a few hundred terms of size ~1.
    np.testing.assert_allclose(float(_to_numpy(kl)), total, rtol=1e-5)


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
    x = _inputs(shape)
    sampled = _to_numpy(layer(x))
    assert not np.allclose(sampled[:, 0], sampled[:, 1])
    layer.posterior_value = "mean"
    mean = _to_numpy(layer(x))
    np.testing.assert_allclose(mean[:, 0], mean[:, 1], rtol=1e-6)


# -- errors -------------------------------------------------------------------

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
