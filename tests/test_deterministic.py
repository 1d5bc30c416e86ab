"""`kb.to_deterministic`: plain Keras layers at the posterior mean.

The reference for every check is the Bayesian model itself in mean mode
(`kb.set_posterior_value(model, "mean")`), whose kernels are first moved
off their initial values so that a wrong kernel, factor or bias shows.
The layer each Bayesian layer becomes is checked by class; a copy without
members is loaded again in a Python process that never imports
keras_bayes.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

import keras_bayes as kb
from tests import conversion_checks as checks
from tests.backend_marks import only_on
from tests.test_conversion import ResidualBlock

L = kb.layers


def _randomise(model, seed=0):
    """Every float weight drawn afresh (locs, factors, biases, scales)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if not variable.trainable or not variable.dtype.startswith("float"):
            continue
        value = rng.normal(size=tuple(variable.shape))
        if "alpha" in variable.path or "gamma" in variable.path:
            value = 1.0 + 0.3 * value  # rank-1 factors: around one
        variable.assign(value.astype(variable.dtype))


def _model(layer, input_shape):
    inputs = keras.Input(input_shape)
    outputs = layer(inputs)
    model = keras.Model(inputs, outputs)
    _randomise(model)
    return model


def _inputs(shape, seed=1):
    return (
        np.random.default_rng(seed).normal(size=(2, *shape)).astype("float32")
    )


def _assert_equals_mean_mode(model, plain, x):
    kb.set_posterior_value(model, "mean")
    expected = checks.numpy(model(x))
    got = checks.numpy(plain(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# (Bayesian layer, input shape, expected plain class)
CASES = {
    "Conv1D": (lambda: L.Conv1DFlipout(4, 3), (9, 3), keras.layers.Conv1D),
    "Conv2D-groups": (
        lambda: L.Conv2DReparameterization(4, 3, groups=2, strides=2),
        (8, 8, 4),
        keras.layers.Conv2D,
    ),
    "Conv3D": (
        lambda: L.Conv3DFlipout(2, 2, padding="same"),
        (4, 4, 4, 2),
        keras.layers.Conv3D,
    ),
    "Conv1DTranspose": (
        lambda: L.Conv1DTransposeFlipout(3, 3, strides=2),
        (5, 2),
        keras.layers.Conv1DTranspose,
    ),
    "Conv2DTranspose": (
        lambda: L.Conv2DTransposeReparameterization(
            3, 3, strides=2, padding="same", activation="relu"
        ),
        (4, 4, 2),
        keras.layers.Conv2DTranspose,
    ),
    "DepthwiseConv2D": (
        lambda: L.DepthwiseConv2DFlipout(3, depth_multiplier=2),
        (6, 6, 3),
        keras.layers.DepthwiseConv2D,
    ),
    "DepthwiseConv1D": (
        lambda: L.DepthwiseConv1DReparameterization(3, use_bias=False),
        (7, 2),
        keras.layers.DepthwiseConv1D,
    ),
    "SeparableConv2D": (
        lambda: L.SeparableConv2DFlipout(5, 3, depth_multiplier=2),
        (6, 6, 3),
        keras.layers.SeparableConv2D,
    ),
    "SeparableConv1D": (
        lambda: L.SeparableConv1DReparameterization(4, 3, padding="same"),
        (7, 2),
        keras.layers.SeparableConv1D,
    ),
    "Dense": (lambda: L.DenseFlipout(3), (5,), keras.layers.Dense),
    "DenseLocalReparameterization": (
        lambda: L.DenseLocalReparameterization(3, activation="tanh"),
        (5,),
        keras.layers.Dense,
    ),
    "Conv2DRank1-no-members": (
        lambda: L.Conv2DRank1(4, 3, groups=2),
        (6, 6, 4),
        keras.layers.Conv2D,
    ),
    # With members: the batched layers.
    "Conv2D-members": (
        lambda: L.Conv2DFlipout(4, 3, batch_shape=(3,)),
        (6, 6, 2),
        L.BatchedConv2D,
    ),
    "Conv1DTranspose-members": (
        lambda: L.Conv1DTransposeReparameterization(2, 3, batch_shape=(2,)),
        (5, 3),
        L.BatchedConv1DTranspose,
    ),
    "Dense-members": (
        lambda: L.DenseReparameterization(3, batch_shape=(2, 2)),
        (4,),
        L.BatchedDense,
    ),
    "DepthwiseConv2D-members": (
        lambda: L.DepthwiseConv2DFlipout(3, batch_shape=(3,)),
        (6, 6, 2),
        L.BatchedDepthwiseConv2D,
    ),
    "SeparableConv2D-members": (
        lambda: L.SeparableConv2DFlipout(4, 3, batch_shape=(2,)),
        (6, 6, 3),
        keras.Sequential,
    ),
    "Conv2DRank1": (
        lambda: L.Conv2DRank1(6, 3, groups=3, batch_shape=(4,)),
        (6, 6, 3),
        L.BatchedConv2D,
    ),
    "Conv2DTransposeRank1": (
        lambda: L.Conv2DTransposeRank1(3, 3, strides=2, batch_shape=(2,)),
        (4, 4, 2),
        L.BatchedConv2DTranspose,
    ),
    "DenseRank1": (
        lambda: L.DenseRank1(3, batch_shape=(4,)),
        (5,),
        L.BatchedDense,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_layer_becomes_its_plain_layer_at_the_mean(name):
    make, input_shape, expected_class = CASES[name]
    layer = make()
    model = _model(layer, input_shape)
    plain = kb.to_deterministic(model)
    new = plain.get_layer(layer.name)
    assert type(new) is expected_class
    assert kb.workflows.bayesian_layers(plain) == []
    _assert_equals_mean_mode(model, plain, _inputs(input_shape))


def test_rank1_folding_is_exact_for_each_member():
    # Member b of the batched copy against the shared kernel applied to
    # x * r_b and scaled by s_b, computed with keras.layers.Dense in NumPy
    # terms: (x * r_b) @ W * s_b + bias_b.
    layer = L.DenseRank1(3, batch_shape=(2,))
    model = _model(layer, (5,))
    plain = kb.to_deterministic(model)
    x = _inputs((5,))
    kernel = checks.numpy(layer.kernel)
    alpha = checks.numpy(layer.alpha_loc)
    gamma = checks.numpy(layer.gamma_loc)
    bias = checks.numpy(layer.bias)
    got = checks.numpy(plain(x))
    for b in range(2):
        expected = ((x * alpha[b]) @ kernel) * gamma[b] + bias[b]
        np.testing.assert_allclose(got[:, b], expected, rtol=1e-5, atol=1e-5)


def _mixed_model():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2DFlipout(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="norm")(x)
    x = keras.layers.Activation("relu")(x)
    inner = keras.Sequential(
        [
            keras.Input((6, 6, 4)),
            L.SeparableConv2DReparameterization(4, 3, name="separable"),
            keras.layers.GlobalAveragePooling2D(),
        ],
        name="inner",
    )
    x = inner(x)
    x = ops.tanh(x) + x  # a keras.ops operation in the graph
    outputs = L.DenseFlipout(2, name="head")(x)
    model = keras.Model(inputs, outputs)
    _randomise(model)
    model.get_layer("norm").trainable = False
    return model


def test_functional_model_with_nested_model_and_operations():
    model = _mixed_model()
    kb.set_posterior_value(model, "mean")
    before = [checks.numpy(v) for v in model.weights]
    plain = kb.to_deterministic(model)
    assert type(plain.get_layer("conv")) is keras.layers.Conv2D
    assert type(plain.get_layer("head")) is keras.layers.Dense
    inner = plain.get_layer("inner")
    assert type(inner.get_layer("separable")) is keras.layers.SeparableConv2D
    assert not plain.get_layer("norm").trainable
    np.testing.assert_array_equal(
        checks.numpy(plain.get_layer("norm").moving_variance),
        checks.numpy(model.get_layer("norm").moving_variance),
    )
    _assert_equals_mean_mode(model, plain, _inputs((8, 8, 3)))
    # The Bayesian model is left as it was.
    for old, variable in zip(before, model.weights):
        np.testing.assert_array_equal(old, checks.numpy(variable))


def test_sequential_model_stays_sequential():
    model = keras.Sequential(
        [keras.Input((5,)), L.DenseFlipout(4), L.DenseReparameterization(2)]
    )
    _randomise(model)
    plain = kb.to_deterministic(model)
    assert isinstance(plain, keras.Sequential)
    assert [type(layer) for layer in plain.layers] == [keras.layers.Dense] * 2
    _assert_equals_mean_mode(model, plain, _inputs((5,)))


def test_to_bayesian_then_to_deterministic_gives_the_block_back():
    inputs = keras.Input((4, 4, 3))
    x = ResidualBlock(3, name="block")(keras.layers.Conv2D(3, 1)(inputs))
    original = keras.Model(inputs, keras.layers.Dense(2)(x))
    checks.perturb(original)
    bayesian = kb.to_bayesian(original, seed=0)
    _randomise(bayesian, seed=3)
    plain = kb.to_deterministic(bayesian)
    block = plain.get_layer("block")
    assert type(block) is ResidualBlock
    assert type(block.conv) is keras.layers.Conv2D
    assert [type(g) for g in block.gates] == [keras.layers.Dense] * 2
    _assert_equals_mean_mode(bayesian, plain, _inputs((4, 4, 3)))


_LOADER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    model = keras.saving.load_model(sys.argv[1])
    x = np.load(sys.argv[2])
    np.save(sys.argv[3], keras.ops.convert_to_numpy(model(x)))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "keras_bayes")
    print(json.dumps(loaded))
    """
)


@pytest.mark.slow
def test_copy_loads_in_a_process_without_keras_bayes(tmp_path):
    model = _mixed_model()
    plain = kb.to_deterministic(model)
    x = _inputs((8, 8, 3))
    plain.save(tmp_path / "plain.keras")
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _LOADER,
            str(tmp_path / "plain.keras"),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": keras.backend.backend()},
        cwd=tmp_path,  # not the repository: keras_bayes is not importable
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    kb.set_posterior_value(model, "mean")
    np.testing.assert_allclose(
        np.load(tmp_path / "y.npy"),
        checks.numpy(model(x)),
        rtol=1e-5,
        atol=1e-5,
    )


@only_on("tensorflow", reason="model.export writes a TensorFlow SavedModel")
def test_tensorflow_export_serves_the_mean(tmp_path):
    import tensorflow as tf

    model = _mixed_model()
    plain = kb.to_deterministic(model)
    plain.export(str(tmp_path / "saved"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "saved"))
    x = _inputs((8, 8, 3))
    kb.set_posterior_value(model, "mean")
    np.testing.assert_allclose(
        served.serve(tf.constant(x)).numpy(),
        checks.numpy(model(x)),
        rtol=1e-5,
        atol=1e-5,
    )


@keras.saving.register_keras_serializable(package="keras_bayes_tests")
class HoldsBayesian(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = L.Conv2DFlipout(2, 1, name="inner_conv")

    def call(self, x):
        return self.conv(x)


def test_subclassed_layer_holding_bayesian_layers_is_refused():
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, HoldsBayesian(name="holder")(inputs))
    with pytest.raises(ValueError) as error:
        kb.to_deterministic(model)
    assert str(error.value) == (
        "to_deterministic cannot convert layer 'holder' (HoldsBayesian): it "
        "holds Bayesian layers ('inner_conv') that its config would make "
        "again. Write the block with `keras.layers` inside, or convert it "
        "with `to_bayesian`, whose blocks `to_deterministic` can undo."
    )


@pytest.mark.parametrize(
    "model",
    [pytest.param("model", id="string"), pytest.param(None, id="none")],
)
def test_needs_a_built_model(model):
    with pytest.raises(ValueError, match=r"Received: model="):
        kb.to_deterministic(model)


def test_unbuilt_sequential_is_refused():
    with pytest.raises(
        ValueError, match="Expected a built Sequential or Functional model"
    ):
        kb.to_deterministic(keras.Sequential([L.DenseFlipout(2)]))


class ForgetsItsUnits(keras.layers.Layer):
    """A layer with a weight whose config cannot rebuild it."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units))

    def call(self, x):
        return ops.matmul(x, self.w)

    def get_config(self):
        return super().get_config()  # without `units`


def test_errors_name_to_deterministic():
    inputs = keras.Input((3,))
    x = L.DenseFlipout(2)(inputs)
    outputs = ForgetsItsUnits(2, name="forgetful")(x)
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError) as error:
        kb.to_deterministic(model)
    assert str(error.value).startswith(
        "to_deterministic cannot copy layer 'forgetful' (ForgetsItsUnits) "
        "from its config: TypeError: "
    ), error.value
