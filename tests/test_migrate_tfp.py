"""`kb.migrate` for TensorFlow Probability: trained `tfp.layers` models.

The models are trained and saved by real TFP in tf_keras
(`tests/peers/make_tfp_models.py`); the references are TFP's own outputs at
the posterior mean and TFP's `sum(model.losses)`.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import layers

import keras_bayes as kb
from tests.migration_support import TFP, assert_load_refused, peer_models

BACKEND = keras.backend.backend()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tfp_models():
    return peer_models(TFP)


# keras-bayes twins of the models in make_tfp_models.py.


def conv2d(units=6, plain_head=True, bias_posterior="mean_field_normal"):
    return keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            kb.layers.Conv2DFlipout(
                4,
                3,
                padding="same",
                activation="relu",
                bias_posterior=bias_posterior,
            ),
            layers.BatchNormalization(momentum=0.5),
            layers.MaxPooling2D(),
            kb.layers.Conv2DReparameterization(3, 3),
            layers.Conv2D(3, 1),
            layers.Flatten(),
            kb.layers.DenseLocalReparameterization(units, activation="relu"),
        ]
        + ([layers.Dense(2)] if plain_head else [])
    )


def conv1d():
    inputs = keras.Input((10, 3))
    x = kb.layers.Conv1DReparameterization(
        4, 3, padding="same", activation="relu"
    )(inputs)
    y = kb.layers.Conv1DFlipout(4, 3, dilation_rate=2, padding="same")(x)
    x = layers.Add()([x, y])
    x = layers.Conv1D(2, 1)(x)
    x = layers.GlobalAveragePooling1D()(x)
    outputs = kb.layers.DenseFlipout(3)(x)
    return keras.Model(inputs, outputs)


def conv3d():
    return keras.Sequential(
        [
            keras.Input((4, 4, 4, 1)),
            kb.layers.Conv3DFlipout(2, 2, activation="relu"),
            kb.layers.Conv3DReparameterization(2, 2, strides=2),
            layers.Flatten(),
            kb.layers.DenseReparameterization(2),
        ]
    )


BUILDERS = {"conv2d": conv2d, "conv1d": conv1d, "conv3d": conv3d}
MODELS = [pytest.param(name, id=name) for name in BUILDERS]


def _reference(folder, name):
    return np.load(folder / name / "reference.npz")


def _mean_outputs_and_kl(model, x):
    kb.set_posterior_value(model, "mean")
    outputs = keras.ops.convert_to_numpy(model(x))
    kl = float(keras.ops.convert_to_numpy(sum(model.losses)))
    return outputs, kl


def _assert_matches_tfp(model, reference):
    outputs, kl = _mean_outputs_and_kl(model, reference["x"])
    np.testing.assert_allclose(outputs, reference["mean"], rtol=0, atol=1e-4)
    # Float32 sums of a few hundred terms of size ~1: relative 1e-5.
    np.testing.assert_allclose(kl, float(reference["kl"]), rtol=1e-5)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(
    "filename",
    [
        pytest.param("weights.h5", id="save_weights-h5"),
        pytest.param("model.h5", id="model-h5"),
        pytest.param("model.keras", id="model-keras"),
    ],
)
def test_load_tfp_weights_gives_tfp_outputs_and_kl(tfp_models, name, filename):
    model = BUILDERS[name]()
    kb.migrate.load_tfp_weights(model, tfp_models / name / filename)
    _assert_matches_tfp(model, _reference(tfp_models, name))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(
    "filename",
    [
        pytest.param("model.h5", id="h5"),
        pytest.param("model.keras", id="keras"),
    ],
)
def test_from_tfp_gives_tfp_outputs_and_kl(tfp_models, name, filename):
    model = kb.migrate.from_tfp(tfp_models / name / filename)
    _assert_matches_tfp(model, _reference(tfp_models, name))
    twin = BUILDERS[name]()
    # The same classes in the same order, and the posteriors the file's
    # variables call for (the first conv of conv2d has a mean-field bias).
    assert [type(layer) for layer in model.layers] == [
        type(layer) for layer in twin.layers
    ]
    for ours, expected in zip(model.layers, twin.layers):
        if isinstance(expected, kb.layers.VariationalLayer):
            assert type(ours.bias_posterior) is type(expected.bias_posterior)
            assert ours.kl_weight == 1.0


def test_from_tfp_needs_neither_tfp_nor_tf_keras(tfp_models, tmp_path):
    """In a process where importing them fails (TensorFlow too, on the JAX
    and PyTorch backends), `from_tfp` rebuilds both file formats into the
    model it rebuilds here (whose outputs are checked against TFP's above):
    the same layer classes and the same weights."""
    blocked = ["tensorflow_probability", "tf_keras"]
    if BACKEND != "tensorflow":
        blocked.append("tensorflow")
    folder = tfp_models / "conv3d"
    filenames = ("model.h5", "model.keras")
    script = f"""
import json, sys
for name in {blocked!r}:
    sys.modules[name] = None
import numpy as np
import keras_bayes as kb
from keras import ops
classes = []
for index, filename in enumerate({filenames!r}):
    model = kb.migrate.from_tfp({str(folder)!r} + "/" + filename)
    classes.append([type(layer).__name__ for layer in model.layers])
    weights = [ops.convert_to_numpy(v) for v in model.weights]
    np.savez({str(tmp_path)!r} + f"/{{index}}.npz", *weights)
loaded = [name for name in {blocked!r} if sys.modules.get(name) is not None]
print(json.dumps({{"classes": classes, "loaded": loaded}}))
"""
    env = dict(os.environ, KERAS_BACKEND=BACKEND, PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    for index, filename in enumerate(filenames):
        model = kb.migrate.from_tfp(folder / filename)
        assert report["classes"][index] == [
            type(layer).__name__ for layer in model.layers
        ]
        saved = np.load(tmp_path / f"{index}.npz")
        assert len(saved.files) == len(model.weights)
        for i, variable in enumerate(model.weights):
            np.testing.assert_array_equal(
                saved[f"arr_{i}"], keras.ops.convert_to_numpy(variable)
            )


def test_custom_divergence_is_named_and_weights_still_load(tfp_models):
    folder = tfp_models / "custom_divergence"
    for filename in ("model.h5", "model.keras"):
        with pytest.raises(ValueError) as error:
            kb.migrate.from_tfp(folder / filename)
        message = str(error.value)
        assert "layer 'dense_flipout" in message
        assert "`kernel_divergence_fn` is not TFP's default" in message
        assert "`kl_weight=1 / N`" in message
        assert "kb.migrate.load_tfp_weights" in message
    # What the message says to do: the divergence was KL / 100.
    model = keras.Sequential(
        [keras.Input((5,)), kb.layers.DenseFlipout(3, kl_weight=0.01)]
    )
    kb.migrate.load_tfp_weights(model, folder / "weights.h5")
    _assert_matches_tfp(model, _reference(tfp_models, "custom_divergence"))


def test_shape_mismatch_names_layer_and_shapes_and_changes_nothing(
    tfp_models,
):
    model = conv2d(units=5)
    assert_load_refused(
        kb.migrate.load_tfp_weights,
        model,
        tfp_models / "conv2d" / "weights.h5",
        f"layer '{model.layers[6].name}'",
        "kernel_posterior_loc gives shape (12, 6) in Keras' layout",
        "`kernel_loc` has shape (12, 5)",
    )


def test_layer_count_mismatch_lists_layers_and_changes_nothing(tfp_models):
    model = conv2d(plain_head=False)
    assert_load_refused(
        kb.migrate.load_tfp_weights,
        model,
        tfp_models / "conv2d" / "model.h5",
        "the file has 6 layers with weights",
        "the model has 5",
    )


def test_plain_layer_for_bayesian_one_is_refused(tfp_models):
    model = keras.Sequential(
        [keras.Input((5,)), layers.Dense(3, name="plain_head")]
    )
    assert_load_refused(
        kb.migrate.load_tfp_weights,
        model,
        tfp_models / "custom_divergence" / "model.keras",
        "layer 'plain_head' (Dense) is a plain layer",
        "is a Bayesian layer",
    )


def test_separable_layer_counts_as_bayesian(tfp_models):
    # A Bayesian layer whose weights are not `kernel` / `bias` (here the
    # depthwise and pointwise kernels) is Bayesian too: the refusal lists
    # its posterior variables instead of calling it a plain layer.
    model = keras.Sequential(
        [
            keras.Input((5, 1)),
            kb.layers.SeparableConv1DFlipout(3, 1, name="separable"),
        ]
    )
    assert_load_refused(
        kb.migrate.load_tfp_weights,
        model,
        tfp_models / "custom_divergence" / "model.keras",
        "layer 'separable' (SeparableConv1DFlipout) has ['bias_loc', "
        "'depthwise_kernel_loc', 'depthwise_kernel_untransformed_scale', "
        "'pointwise_kernel_loc', 'pointwise_kernel_untransformed_scale']; "
        "the file's layer",
    )


def test_bias_posterior_must_match(tfp_models):
    model = conv2d(bias_posterior="deterministic")
    assert_load_refused(
        kb.migrate.load_tfp_weights,
        model,
        tfp_models / "conv2d" / "weights.h5",
        "bias_posterior_untransformed_scale",
        "bias_posterior='mean_field_normal'",
    )


def test_weights_only_file_is_refused_by_from_tfp(tfp_models):
    with pytest.raises(ValueError, match="holds weights only"):
        kb.migrate.from_tfp(tfp_models / "conv2d" / "weights.h5")


def test_unreadable_file_says_what_to_save(tmp_path):
    path = tmp_path / "ckpt.index"
    path.write_bytes(b"not a model")
    model = keras.Sequential([keras.Input((5,)), layers.Dense(3)])
    with pytest.raises(ValueError, match="TensorFlow checkpoint"):
        kb.migrate.load_tfp_weights(model, path)
