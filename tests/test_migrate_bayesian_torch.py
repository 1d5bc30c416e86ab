"""`kb.migrate.load_bayesian_torch`: trained bayesian-torch models.

The models are trained and saved by real bayesian-torch
(`tests/peers/make_bayesian_torch_models.py`); the references are its own
forward passes at the posterior mean on channels-first inputs, and its own
KL terms. The keras-bayes twins below are channels-last and are fed the
same inputs as NHWC arrays.
"""

import re

import keras
import numpy as np
import pytest
from keras import layers

import keras_bayes as kb
from tests.keras_support import skip_unless_model_runs
from tests.migration_support import (
    BAYESIAN_TORCH,
    assert_load_refused,
    peer_models,
)


@pytest.fixture(scope="module")
def torch_models():
    return peer_models(BAYESIAN_TORCH)


# keras-bayes twins of the models in make_bayesian_torch_models.py.


def net2d(fc1_units=6):
    """fc1 keeps its bias posterior (and gets the prior bayesian-torch's
    layers have); every other Bayesian layer has a deterministic bias."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            kb.layers.Conv2DReparameterization(4, 3, padding="same"),
            layers.BatchNormalization(epsilon=1e-5),
            layers.ReLU(),
            kb.layers.Conv2DFlipout(4, 3, groups=2),
            layers.MaxPooling2D(2),
            kb.layers.Conv2DTransposeReparameterization(3, 2, strides=2),
            layers.ReLU(),
            layers.Conv2D(2, 3),
            layers.Flatten(),
            layers.BatchNormalization(epsilon=1e-5),
            kb.layers.DenseFlipout(
                fc1_units,
                activation="relu",
                bias_posterior="mean_field_normal",
                bias_prior="normal",
            ),
            layers.Dense(2),
        ]
    )


def net1d(data_format="channels_last"):
    shape = (6, 2) if data_format == "channels_last" else (2, 6)
    return keras.Sequential(
        [
            keras.Input(shape),
            kb.layers.Conv1DReparameterization(
                3, 3, activation="relu", data_format=data_format
            ),
            kb.layers.Conv1DTransposeFlipout(
                3, 3, strides=2, data_format=data_format
            ),
            layers.Flatten(),
            kb.layers.DenseReparameterization(3),
        ]
    )


def net3d():
    return keras.Sequential(
        [
            keras.Input((3, 3, 3, 1)),
            kb.layers.Conv3DFlipout(2, 2, activation="relu"),
            kb.layers.Conv3DTransposeReparameterization(
                2, 2, activation="relu"
            ),
            kb.layers.Conv3DTransposeFlipout(2, 2, strides=2),
            layers.Flatten(),
            layers.Dense(2),
        ]
    )


BUILDERS = {"net2d": net2d, "net1d": net1d, "net3d": net3d}
# The modules whose `rho_bias` the twins drop (deterministic biases).
DROPPED = {
    "net2d": ["conv1", "conv2", "tconv"],
    "net1d": ["conv", "tconv", "fc"],
    "net3d": ["conv", "tconv1", "tconv2"],
}


def _source(folder, name, kind):
    import torch

    path = folder / name / "state_dict.pt"
    if kind == "file":
        return path
    state_dict = torch.load(path, weights_only=True)
    if kind == "numpy":
        return {key: value.numpy() for key, value in state_dict.items()}
    if kind == "checkpoint":
        return {"state_dict": state_dict, "epoch": 4}
    return state_dict


def _load(model, source, name):
    with pytest.warns(UserWarning) as record:
        kb.migrate.load_bayesian_torch(model, source)
    messages = " ".join(str(w.message) for w in record)
    dropped = re.findall(r"`([\w.]+)\.rho_bias`", messages)
    assert dropped == DROPPED[name], messages


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in BUILDERS])
@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("state_dict", id="state_dict"),
        pytest.param("numpy", id="numpy-arrays"),
        pytest.param("file", id="torch-save-file"),
        pytest.param("checkpoint", id="checkpoint-dict"),
    ],
)
def test_nhwc_model_gives_bayesian_torch_outputs_and_kl(
    torch_models, name, kind
):
    reference = np.load(torch_models / name / "reference.npz")
    model = BUILDERS[name]()
    _load(model, _source(torch_models, name, kind), name)
    kb.set_posterior_value(model, "mean")
    x = np.moveaxis(reference["x"], 1, -1)
    outputs = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(outputs, reference["mean"], rtol=0, atol=1e-4)
    # The same sigmas: our closed-form KL against N(0, 1) equals
    # bayesian-torch's for every kernel, and for fc1's carried bias.
    expected = float(reference["kl_kernels"])
    if name == "net2d":
        expected += float(reference["kl_bias_fc1"])
    kl = float(keras.ops.convert_to_numpy(sum(model.losses)))
    np.testing.assert_allclose(kl, expected, rtol=1e-5)


def test_channels_first_model_needs_no_permutation(torch_models):
    """A channels-first Keras model flattens in PyTorch's order already."""
    reference = np.load(torch_models / "net1d" / "reference.npz")
    x = reference["x"]
    plain = keras.Sequential(
        [
            keras.Input((2, 6)),
            layers.Conv1D(3, 3, data_format="channels_first"),
            layers.Conv1DTranspose(
                3, 3, strides=2, data_format="channels_first"
            ),
        ]
    )
    skip_unless_model_runs(plain, x)
    model = net1d("channels_first")
    _load(model, _source(torch_models, "net1d", "state_dict"), "net1d")
    kb.set_posterior_value(model, "mean")
    outputs = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(outputs, reference["mean"], rtol=0, atol=1e-4)


def test_shape_mismatch_names_layer_and_shapes_and_changes_nothing(
    torch_models,
):
    model = net2d(fc1_units=7)
    name = model.layers[10].name
    assert_load_refused(
        kb.migrate.load_bayesian_torch,
        model,
        _source(torch_models, "net2d", "state_dict"),
        f"layer '{name}': `fc1.mu_weight` gives shape (32, 6) in Keras' layout",
        "`kernel_loc` has shape (32, 7)",
    )


def test_module_count_mismatch_lists_both_sides(torch_models):
    model = net3d()
    model.pop()
    assert_load_refused(
        kb.migrate.load_bayesian_torch,
        model,
        _source(torch_models, "net3d", "file"),
        "the file has 4 modules with weights ('conv', 'tconv1', 'tconv2', "
        "'fc')",
        "the model has 3",
    )


def test_bayesian_layer_for_plain_module_is_refused(torch_models):
    model = keras.Sequential(
        [
            keras.Input((3, 3, 3, 1)),
            kb.layers.Conv3DFlipout(2, 2),
            kb.layers.Conv3DTransposeReparameterization(2, 2),
            kb.layers.Conv3DTransposeFlipout(2, 2, strides=2),
            layers.Flatten(),
            kb.layers.DenseFlipout(2, name="bayesian_head"),
        ]
    )
    assert_load_refused(
        kb.migrate.load_bayesian_torch,
        model,
        _source(torch_models, "net3d", "state_dict"),
        "layer 'bayesian_head' (DenseFlipout) has ['bias_loc', "
        "'kernel_loc', 'kernel_untransformed_scale']; the module 'fc' has "
        "['bias', 'weight']",
    )


def test_scales_under_the_floor_are_named(torch_models):
    source = _source(torch_models, "net1d", "numpy")
    source["conv.rho_kernel"] = np.full_like(source["conv.rho_kernel"], -20.0)
    model = net1d()
    with pytest.warns(UserWarning) as record:
        kb.migrate.load_bayesian_torch(model, source)
    messages = [str(w.message) for w in record]
    assert any(
        "raised to it: `conv.rho_kernel` (18 of 18)" in m for m in messages
    ), messages
    floor = keras.ops.convert_to_numpy(
        kb.posteriors.MeanFieldNormal.scale(
            model.layers[0].kernel_untransformed_scale
        )
    )
    np.testing.assert_allclose(floor, 1e-5, rtol=1e-6)


@pytest.mark.parametrize(
    "source",
    [
        pytest.param([1, 2], id="list"),
        pytest.param({"fc.weight": "text"}, id="non-array-values"),
    ],
)
def test_not_a_state_dict_is_refused(source):
    model = keras.Sequential([keras.Input((4,)), layers.Dense(2)])
    with pytest.raises(ValueError, match="Invalid value for argument "):
        kb.migrate.load_bayesian_torch(model, source)


def test_whole_module_file_says_to_save_the_state_dict(tmp_path):
    torch = pytest.importorskip("torch")

    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(4, 2), path)
    model = keras.Sequential([keras.Input((4,)), layers.Dense(2)])
    with pytest.raises(ValueError, match=r"torch.save\(model.state_dict\(\)"):
        kb.migrate.load_bayesian_torch(model, path)
