"""`kb.to_bayesian`: conversion of trained Keras models.

A converted model computes the original model in mean mode (MOPED: the
kernel posterior is centred on the trained kernel, with scales
`moped_delta * |kernel|`), samples around it otherwise, and trains with
its KL terms.
"""

import re

import keras
import numpy as np
import pytest

import keras_bayes as kb
from tests.helpers import normal_inputs, to_numpy
from tests.keras_support import skip_unless_model_runs
from tests.references import posterior_scale


def _randomize(model, seed=1):
    """Non-trivial weights, biases and batch-norm statistics."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        value = rng.normal(scale=0.3, size=variable.shape)
        if "variance" in variable.name:
            value = np.abs(value) + 0.5
        variable.assign(value.astype("float32"))


def _check_converted(model, converted, x, moped_delta):
    kb.set_posterior_value(converted, "mean")
    np.testing.assert_allclose(
        to_numpy(converted(x)), to_numpy(model(x)), rtol=1e-5, atol=1e-5
    )
    kb.set_posterior_value(converted, "sample")
    assert not np.allclose(
        to_numpy(converted(x)), to_numpy(model(x)), atol=1e-6
    )
    originals = {layer.name: layer for layer in model._flatten_layers()}
    bayesian = kb.workflows.bayesian_layers(converted)
    assert bayesian
    for layer in bayesian:
        kernel = to_numpy(originals[layer.name].kernel)
        np.testing.assert_array_equal(to_numpy(layer.kernel_loc), kernel)
        scale = posterior_scale(to_numpy(layer.kernel_untransformed_scale))
        np.testing.assert_allclose(
            scale, moped_delta * np.abs(kernel), rtol=1e-4, atol=2e-5
        )


CONVERSION_CASES = {
    "conv1d_causal_dilated": (
        (9, 3),
        lambda: [
            keras.layers.Conv1D(4, 3, padding="causal", dilation_rate=2),
            keras.layers.Conv1D(4, 2, strides=2, groups=2, activation="tanh"),
        ],
    ),
    "conv2d_channels_first_bn": (
        (4, 7, 7),
        lambda: [
            keras.layers.Conv2D(
                4, 3, padding="same", data_format="channels_first"
            ),
            keras.layers.BatchNormalization(axis=1),
            keras.layers.Conv2D(
                2, 2, data_format="channels_first", use_bias=False
            ),
        ],
    ),
    "conv_transpose": (
        (4, 4, 2),
        lambda: [
            keras.layers.Conv2DTranspose(
                3, 3, strides=2, padding="same", output_padding=1
            ),
            keras.layers.Conv2DTranspose(
                2, 2, dilation_rate=2, activation="relu"
            ),
            keras.layers.Conv2D(2, 3, data_format="channels_last"),
        ],
    ),
    "conv3d": (
        (4, 4, 4, 2),
        lambda: [
            keras.layers.Conv3D(3, 2, strides=(1, 2, 1), activation="relu")
        ],
    ),
}


@pytest.mark.parametrize("estimator", ["flipout", "reparameterization"])
@pytest.mark.parametrize("case", sorted(CONVERSION_CASES))
def test_to_bayesian_sequential(case, estimator):
    input_shape, make_layers = CONVERSION_CASES[case]
    model = keras.Sequential(
        [keras.Input(input_shape), *make_layers(), keras.layers.Flatten()]
        + [keras.layers.Dense(3, activation="softmax")]
    )
    _randomize(model)
    converted = kb.to_bayesian(model, estimator=estimator, moped_delta=0.2)
    suffix = "Flipout" if estimator == "flipout" else "Reparameterization"
    for original, new in zip(model.layers, converted.layers):
        if isinstance(new, kb.layers.VariationalLayer):
            assert type(new).__name__ == type(original).__name__ + suffix
            new_config, old_config = new.get_config(), original.get_config()
            for key in (
                "strides",
                "padding",
                "dilation_rate",
                "groups",
                "output_padding",
            ):
                if key in old_config:
                    assert tuple(np.ravel(new_config[key])) == tuple(
                        np.ravel(old_config[key])
                    ), key
            assert new_config["activation"] == old_config["activation"]
            assert new.use_bias == original.use_bias
        else:
            assert type(new) is type(original)
    x = normal_inputs((3, *input_shape))
    skip_unless_model_runs(model, x)
    _check_converted(model, converted, x, 0.2)


def test_to_bayesian_functional_branches_and_nested_model():
    inputs = keras.Input((6, 6, 2))
    left = keras.layers.Conv2D(3, 3, padding="same", name="left")(inputs)
    right = keras.layers.Conv2D(3, 1, name="right")(inputs)
    merged = keras.layers.Add()([left, right])
    inner = keras.Sequential(
        [keras.Input((6, 6, 3)), keras.layers.Conv2D(2, 3, name="inner_conv")],
        name="inner",
    )
    flat = keras.layers.Flatten()(inner(merged))
    outputs = keras.layers.Dense(4, name="head")(flat)
    model = keras.Model(inputs, outputs)
    _randomize(model)
    converted = kb.to_bayesian(model, kl_weight=0.5, seed=7)
    names = sorted(
        layer.name for layer in kb.workflows.bayesian_layers(converted)
    )
    assert names == ["head", "inner_conv", "left", "right"]
    assert all(
        layer.kl_weight == 0.5
        for layer in kb.workflows.bayesian_layers(converted)
    )
    _check_converted(model, converted, normal_inputs((2, 6, 6, 2)), 0.1)


def test_converted_model_trains_and_adds_kl():
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(4, activation="relu")]
        + [keras.layers.Dense(2)]
    )
    converted = kb.to_bayesian(model, kl_weight=1e-3)
    converted(np.zeros((1, 8), "float32"))
    assert len(converted.losses) == 2
    converted.compile(optimizer="adam", loss="mse")
    history = converted.fit(
        normal_inputs((16, 8)),
        normal_inputs((16, 2), seed=3),
        epochs=2,
        verbose=0,
    )
    assert np.all(np.isfinite(history.history["loss"]))


def test_to_bayesian_warns_about_dropped_regularizers():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, kernel_regularizer="l2")]
    )
    with pytest.warns(UserWarning, match=r"\['kernel_regularizer'\]"):
        kb.to_bayesian(model)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        pytest.param({"estimator": "local"}, "estimator", id="estimator"),
        pytest.param({"moped_delta": 0.0}, "moped_delta", id="moped_delta_0"),
        pytest.param(
            {"moped_delta": float("inf")}, "moped_delta", id="moped_delta_inf"
        ),
        pytest.param({"kl_weight": -1.0}, "kl_weight", id="kl_weight"),
        pytest.param(
            {"posterior_value": "median"},
            "posterior_value",
            id="posterior_value",
        ),
    ],
)
def test_to_bayesian_bad_arguments(kwargs, argument):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    value = next(iter(kwargs.values()))
    with pytest.raises(
        ValueError,
        match=re.escape(f"argument `{argument}`")
        + ".*"
        + re.escape(f"Received: {argument}={value!r}"),
    ):
        kb.to_bayesian(model, **kwargs)


def test_to_bayesian_needs_a_built_model():
    with pytest.raises(ValueError, match="argument `model`"):
        kb.to_bayesian(keras.layers.Dense(2))
