"""The deterministic batched layers `BatchedConvND(Transpose)`.

Every member must compute what the plain Keras layer with that member's
weights computes, for an input shared by all members `(N, *spatial, C)` and
for one input per member `(N, *batch_shape, *spatial, C)`. Members that
each have their own input run through one of two formulations (one grouped
convolution, or one convolution per member; `kb.config.set_member_strategy`):
the parity tests run both on every backend (TensorFlow runs transposed
convolutions per member under either setting). With an empty `batch_shape`
a batched layer is the Keras layer, variables, regularization and config
included.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_bayes as kb
from tests.helpers import normal_inputs, to_numpy
from tests.layer_test import KERAS_CONV, run_layer_test
from tests.members import ATOL, RTOL, SPATIAL, check_members, input_shapes

BATCHED_CLASSES = {
    (1, False): kb.layers.BatchedConv1D,
    (2, False): kb.layers.BatchedConv2D,
    (3, False): kb.layers.BatchedConv3D,
    (1, True): kb.layers.BatchedConv1DTranspose,
    (2, True): kb.layers.BatchedConv2DTranspose,
    (3, True): kb.layers.BatchedConv3DTranspose,
}


# -- every member is the Keras layer ----------------------------------------

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
    shape, member_shape = input_shapes(
        rank, channels, kwargs.get("data_format"), batch_shape
    )
    layer = BATCHED_CLASSES[rank, transpose](
        **kwargs, batch_shape=batch_shape, bias_initializer="random_normal"
    )
    layer.build(shape)
    kernel = to_numpy(layer.kernel)
    bias = to_numpy(layer.bias) if layer.bias is not None else None

    def weights(index):
        if bias is None:
            return [kernel[index]]
        return [kernel[index], bias[index]]

    check_members(
        layer,
        KERAS_CONV[rank, transpose],
        kwargs,
        normal_inputs(shape),
        normal_inputs(member_shape, seed=1),
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
    x = normal_inputs((2, *SPATIAL[:rank], 2))
    keras_out, out = to_numpy(keras_layer(x)), to_numpy(layer(x))

    # Same variables, initial values, outputs and regularization losses.
    assert [v.name for v in layer.weights] == ["kernel", "bias"]
    for ours, theirs in zip(layer.weights, keras_layer.weights):
        np.testing.assert_array_equal(to_numpy(ours), to_numpy(theirs))
    np.testing.assert_allclose(out, keras_out, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        [to_numpy(loss) for loss in layer.losses],
        [to_numpy(loss) for loss in keras_layer.losses],
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
    kernel = to_numpy(layer.kernel)
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
        return to_numpy(layer.kernel)

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
    kernel, bias = to_numpy(layer.kernel), to_numpy(layer.bias)
    members = [index for index in np.ndindex(2, 2)]
    # L2 (Keras default 0.01) sums over elements: over all members at once.
    expected_l2 = sum(
        to_numpy(keras.regularizers.L2()(kernel[i])) for i in members
    )
    expected_squared_sum = sum(np.sum(bias[i]) ** 2 for i in members)
    np.testing.assert_allclose(
        sorted(to_numpy(loss) for loss in layer.losses),
        sorted([expected_l2, expected_squared_sum]),
        rtol=1e-5,
    )
    constrained = to_numpy(layer.kernel.constraint(layer.kernel))
    for index in members:
        np.testing.assert_allclose(
            constrained[index],
            to_numpy(max_norm(kernel[index])),
            rtol=1e-6,
        )
    assert np.all(to_numpy(layer.bias.constraint(layer.bias)) >= 0)


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
