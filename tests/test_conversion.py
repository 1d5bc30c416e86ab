"""`kb.to_bayesian` on small models: what is converted, copied and named.

Every check compares with the original Keras model: mean-mode outputs equal
its outputs, posterior locations equal its kernels, scales equal
`moped_delta * |kernel|` (NumPy), copied layers hold its weights and flags.
The real architectures are in `test_conversion_models.py`.
"""

import re
import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_bayes as kb
from tests import conversion_checks as checks
from tests.keras_support import skip_unless_model_runs


def _inputs(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _convert_quietly(model, **kwargs):
    """Convert, failing on any warning (none is expected)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        return kb.to_bayesian(model, **kwargs)


def _check(model, converted, x, moped_delta=0.1):
    checks.assert_mean_mode_equal(model, converted, x)
    kb.set_posterior_value(converted, "sample")
    assert not np.allclose(
        checks.numpy(converted(x)), checks.numpy(model(x)), atol=1e-6
    )
    return checks.assert_moped(model, converted, moped_delta)


def _bayesian_names(model):
    return sorted(layer.name for layer in kb.workflows.bayesian_layers(model))


# -- layer kinds and their arguments ----------------------------------------

SEQUENTIAL_CASES = {
    "conv1d_causal_dilated_groups": (
        (9, 4),
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
    "conv2d_groups": (
        (6, 6, 6),
        lambda: [
            keras.layers.Conv2D(6, 3, groups=3, padding="same"),
            keras.layers.Conv2D(4, 1, groups=2, activation="relu"),
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
    "conv1d_transpose": (
        (5, 3),
        lambda: [keras.layers.Conv1DTranspose(2, 3, strides=2)],
    ),
    "conv3d_and_transpose": (
        (4, 4, 4, 2),
        lambda: [
            keras.layers.Conv3D(3, 2, strides=(1, 2, 1), activation="relu"),
            keras.layers.Conv3DTranspose(2, 2, padding="same"),
        ],
    ),
    "dense_on_sequences": (
        (5, 3),
        lambda: [
            keras.layers.Dense(4, activation="relu"),
            keras.layers.LayerNormalization(),
            keras.layers.Dense(2, use_bias=False),
        ],
    ),
}


# Every case with Flipout; the estimator changes only the class, so two
# cases (one convolution, one transposed) also run with reparameterization.
_REPARAMETERIZED = ("conv2d_channels_first_bn", "conv_transpose")


@pytest.mark.parametrize(
    "case, estimator",
    [
        pytest.param(c, "flipout", id=f"{c}-flipout")
        for c in sorted(SEQUENTIAL_CASES)
    ]
    + [
        pytest.param(c, "reparameterization", id=f"{c}-reparameterization")
        for c in _REPARAMETERIZED
    ],
)
def test_sequential_layers_and_arguments(case, estimator):
    input_shape, make_layers = SEQUENTIAL_CASES[case]
    model = keras.Sequential(
        [keras.Input(input_shape), *make_layers(), keras.layers.Flatten()]
        + [keras.layers.Dense(3, activation="softmax")]
    )
    checks.perturb(model)
    converted = _convert_quietly(model, estimator=estimator, moped_delta=0.2)
    assert isinstance(converted, keras.Sequential)
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
                "data_format",
            ):
                if key in old_config:
                    assert (
                        np.ravel(new_config[key]).tolist()
                        == np.ravel(old_config[key]).tolist()
                    ), key
            assert new_config["activation"] == old_config["activation"]
            assert new.use_bias == original.use_bias
        else:
            assert type(new) is type(original)
            for a, b in zip(original.weights, new.weights):
                np.testing.assert_array_equal(checks.numpy(a), checks.numpy(b))
    x = _inputs((3, *input_shape))
    skip_unless_model_runs(model, x)
    _check(model, converted, x, 0.2)


# -- functional graphs -------------------------------------------------------


def test_functional_graph_with_operations_and_nested_models():
    """`x + y`, `ops.mean`, nested Sequential and Functional models."""
    inputs = keras.Input((6, 6, 2))
    left = keras.layers.Conv2D(3, 3, padding="same", name="left")(inputs)
    right = keras.layers.Conv2D(3, 1, name="right")(inputs)
    # Operations (`+`, `*`, `ops.relu`) next to a merging layer (`Add`).
    merged = ops.relu(keras.layers.Add()([left, 0.5 * right]) + left)
    sequential = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.Conv2D(4, 3, name="seq_conv"),
            keras.layers.BatchNormalization(name="seq_bn"),
        ],
        name="stem",
    )
    inner_in = keras.Input((4, 4, 4))
    inner_out = keras.layers.Dense(5, name="inner_dense")(
        ops.mean(inner_in, axis=(1, 2))
    )
    functional = keras.Model(inner_in, inner_out, name="inner")
    features = functional(sequential(merged))
    outputs = keras.layers.Dense(2, name="head")(features * features)
    model = keras.Model(inputs, outputs)
    checks.perturb(model)
    converted = _convert_quietly(model, kl_weight=0.5, seed=7)
    assert _bayesian_names(converted) == [
        "head",
        "inner_dense",
        "left",
        "right",
        "seq_conv",
    ]
    for layer in kb.workflows.bayesian_layers(converted):
        assert layer.kl_weight == 0.5
    _check(model, converted, _inputs((2, 6, 6, 2)))


def test_seeds_count_up_from_the_given_seed():
    model = keras.Sequential(
        [keras.Input((3,))] + [keras.layers.Dense(3) for _ in range(3)]
    )
    converted = _convert_quietly(model, seed=11)
    assert [layer.seed for layer in converted.layers] == [11, 12, 13]
    assert all(layer.seed is None for layer in _convert_quietly(model).layers)


def test_shared_layer_is_converted_once_and_stays_shared():
    shared = keras.layers.Dense(4, name="shared")
    a, b = keras.Input((4,)), keras.Input((4,))
    outputs = shared(shared(a)) + shared(b)
    model = keras.Model([a, b], outputs)
    converted = _convert_quietly(model)
    assert _bayesian_names(converted) == ["shared"]
    x = [_inputs((2, 4)), _inputs((2, 4), seed=1)]
    checks.assert_mean_mode_equal(model, converted, x)


def test_converted_model_trains_and_adds_kl():
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(4, activation="relu")]
        + [keras.layers.Dense(2)]
    )
    converted = _convert_quietly(model, kl_weight=1e-3)
    converted(np.zeros((1, 8), "float32"))
    assert len(converted.losses) == 2
    converted.compile(optimizer="adam", loss="mse")
    history = converted.fit(
        _inputs((16, 8)), _inputs((16, 2), seed=3), epochs=2, verbose=0
    )
    assert np.all(np.isfinite(history.history["loss"]))


# -- other layers: weights and trainable flags -------------------------------


@keras.saving.register_keras_serializable(package="keras_bayes_tests")
class Scale(keras.layers.Layer):
    """A layer with its own weight, as ConvNeXt's LayerScale."""

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(input_shape[-1],), name="gamma")

    def call(self, x):
        return x * self.gamma


def test_other_layers_keep_weights_and_trainable_flags():
    frozen_block = keras.Sequential(
        [
            keras.Input((5, 5, 3)),
            keras.layers.Conv2D(3, 1, name="frozen_conv"),
            keras.layers.BatchNormalization(name="frozen_bn"),
        ],
        name="frozen_block",
    )
    frozen_block.trainable = False
    inputs = keras.Input((5, 5, 3))
    x = frozen_block(inputs)
    x = keras.layers.BatchNormalization(name="bn", trainable=False)(x)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = Scale(name="scale")(x)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    outputs = keras.layers.Conv2D(2, 3, name="conv", trainable=False)(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("frozen_block").get_layer("frozen_bn").trainable = True
    checks.perturb(model)
    converted = _convert_quietly(model)
    originals = {layer.name: layer for layer in model._flatten_layers()}
    for new in converted._flatten_layers(include_self=False):
        if isinstance(new, keras.layers.InputLayer):
            continue
        original = originals[new.name]
        assert new is not original, new.name
        assert new.trainable == original.trainable, new.name
        leaf = not new._flatten_layers(include_self=False)
        if leaf and not isinstance(new, kb.layers.VariationalLayer):
            assert len(new.weights) == len(original.weights)
            for a, b in zip(original.weights, new.weights):
                np.testing.assert_array_equal(checks.numpy(a), checks.numpy(b))
    assert not converted.get_layer("frozen_block").trainable
    assert converted.get_layer("frozen_block").get_layer("frozen_bn").trainable
    assert (
        not converted.get_layer("frozen_block")
        .get_layer("frozen_conv")
        .trainable
    )
    # Frozen Bayesian layers hold no trainable variable.
    assert not converted.get_layer("conv").trainable_weights
    _check(model, converted, _inputs((2, 5, 5, 3)))


def test_lora_dense_converts_its_merged_kernel():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.layers[0].enable_lora(2)
    checks.perturb(model)
    model.layers[0].lora_kernel_b.assign(_inputs((2, 3)))
    converted = _convert_quietly(model)
    layer = converted.layers[0]
    np.testing.assert_allclose(
        checks.numpy(layer.kernel_loc),
        checks.numpy(model.layers[0].kernel),
        rtol=1e-6,
    )
    checks.assert_mean_mode_equal(model, converted, _inputs((2, 4)))


# -- layers inside subclassed layers -----------------------------------------


@keras.saving.register_keras_serializable(package="keras_bayes_tests")
class ResidualBlock(keras.layers.Layer):
    """Makes its layers in the constructor, as keras-hub's blocks do."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = keras.layers.Conv2D(filters, 3, padding="same")
        self.norm = keras.layers.BatchNormalization()
        self.gates = [keras.layers.Dense(filters), keras.layers.Dense(filters)]
        self.scale = self.add_weight(shape=(), initializer="ones")

    def build(self, input_shape):
        # Builds its layers explicitly, as keras-hub's blocks do.
        self.conv.build(input_shape)
        self.norm.build(self.conv.compute_output_shape(input_shape))

    def call(self, x):
        y = self.norm(self.conv(x))
        gate = ops.sigmoid(self.gates[1](self.gates[0](ops.mean(y, (1, 2)))))
        return x + self.scale * y * ops.expand_dims(ops.expand_dims(gate, 1), 1)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="keras_bayes_tests")
class LazyBlock(keras.layers.Layer):
    """Makes its convolution in `build`: the copy is built from the
    original's build config, and the convolution replaced there."""

    def build(self, input_shape):
        self.conv = keras.layers.Conv2D(input_shape[-1], 1)
        self.conv.build(input_shape)

    def call(self, x):
        return self.conv(x)


class UnrecordedLazyBlock(LazyBlock):
    """Makes its convolution in `build` and keeps no build config: its copy
    cannot be built as it was, so the conversion cannot reach the layer."""

    def get_build_config(self):
        return None


def _block_model(block):
    inputs = keras.Input((4, 4, 3))
    x = block(keras.layers.Conv2D(3, 1, name="stem")(inputs))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


def test_layers_inside_a_subclassed_block_are_converted(tmp_path):
    model = _block_model(ResidualBlock(3, name="block"))
    model.get_layer("block").norm.trainable = False
    checks.perturb(model)
    converted = _convert_quietly(model)
    wrapper = converted.get_layer("block")
    assert isinstance(wrapper, kb.conversion.ConvertedBlock)
    block = wrapper.layer
    assert isinstance(block, ResidualBlock)
    assert isinstance(block.conv, kb.layers.Conv2DFlipout)
    assert wrapper.trainable and block.conv.trainable
    assert not block.norm.trainable
    assert all(isinstance(g, kb.layers.DenseFlipout) for g in block.gates)
    # The block's own weight, its batch norm and its layer list follow.
    np.testing.assert_array_equal(
        checks.numpy(block.scale),
        checks.numpy(model.get_layer("block").scale),
    )
    kinds = [type(layer).__name__ for layer in block._flatten_layers()]
    assert kinds == [
        "ResidualBlock",
        "Conv2DFlipout",
        "BatchNormalization",
        "DenseFlipout",
        "DenseFlipout",
    ]
    assert len(_check(model, converted, _inputs((2, 4, 4, 3)))) == 5
    path = tmp_path / "block.keras"
    converted.save(path)
    kb.set_posterior_value(converted, "mean")
    loaded = keras.saving.load_model(path)
    loaded_block = loaded.get_layer("block").layer
    assert isinstance(loaded_block.conv, kb.layers.Conv2DFlipout)
    assert all(
        isinstance(g, kb.layers.DenseFlipout) for g in loaded_block.gates
    )
    kb.set_posterior_value(loaded, "mean")
    x = _inputs((2, 4, 4, 3))
    np.testing.assert_array_equal(
        checks.numpy(loaded(x)), checks.numpy(converted(x))
    )


def _unconverted_warning(model, **kwargs):
    converted, messages = checks.convert_with_warnings(model, **kwargs)
    messages = [m for m in messages if "deterministic" in m]
    assert len(messages) == 1, messages
    return converted, messages[0]


def test_layer_made_in_build_converts_saves_and_comes_back(tmp_path):
    model = _block_model(LazyBlock(name="lazy"))
    checks.perturb(model)
    x = _inputs((2, 4, 4, 3))
    converted = _convert_quietly(model, seed=0)
    lazy_conv = model.get_layer("lazy").conv
    assert _bayesian_names(converted) == sorted(
        [lazy_conv.name, "stem", "head"]
    )
    _check(model, converted, x)
    path = tmp_path / "lazy.keras"
    converted.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(
        loaded.get_layer("lazy").layer.conv, kb.layers.Conv2DFlipout
    )
    checks.assert_mean_mode_equal(model, loaded, x)
    plain = kb.to_deterministic(loaded)
    assert type(plain.get_layer("lazy").conv) is keras.layers.Conv2D
    checks.assert_mean_mode_equal(model, plain, x)


def test_frozen_block_stays_frozen():
    model = _block_model(ResidualBlock(3, name="block"))
    model.get_layer("block").trainable = False
    converted = _convert_quietly(model, layers=["block"])
    wrapper = converted.get_layer("block")
    assert not wrapper.trainable
    assert not any(
        layer.trainable for layer in wrapper._flatten_layers(include_self=False)
    )
    assert not wrapper.trainable_weights
    assert converted.get_layer("stem").trainable


def test_unreachable_layers_are_named_in_one_warning():
    class WeightStandardizedConv2D(keras.layers.Conv2D):
        def convolution_op(self, inputs, kernel):
            mean = ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
            return super().convolution_op(inputs, kernel - mean)

    inputs = keras.Input((4, 4, 3))
    x = UnrecordedLazyBlock(name="lazy")(inputs)
    x = WeightStandardizedConv2D(5, 3, name="standardized")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs)
    converted, message = _unconverted_warning(model)
    assert _bayesian_names(converted) == ["head"]
    lazy_conv = model.get_layer("lazy").conv
    assert message.startswith(
        f"to_bayesian left 2 layers holding {3 * 3 + 3 + 3 * 3 * 3 * 5 + 5}"
        " parameters deterministic"
    )
    assert (
        f"'{lazy_conv.name}' (Conv2D, 12 parameters): held by 'lazy' "
        "(UnrecordedLazyBlock), which creates it in build"
    ) in message
    assert (
        "'standardized' (WeightStandardizedConv2D, 140 parameters): a "
        "subclass of keras.layers.Conv2D"
    ) in message
    checks.assert_mean_mode_equal(model, converted, _inputs((2, 4, 4, 3)))


class ConfigWithABug(keras.layers.Layer):
    """A weightless layer whose `get_config` fails with a bug."""

    def call(self, x):
        return x

    def get_config(self):
        raise RuntimeError("a bug in get_config")


class ConfigWithoutArguments(keras.layers.Layer):
    """A weightless layer that its config cannot rebuild."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, x):
        return x * self.scale

    def get_config(self):
        return super().get_config()  # without `scale`


def test_only_a_layer_that_cannot_be_rebuilt_is_shared():
    # A weightless layer whose config cannot rebuild it is shared (it has
    # no state); any other error is a bug and is raised, not hidden.
    inputs = keras.Input((3,))
    x = ConfigWithoutArguments(2.0, name="scaled")(inputs)
    outputs = keras.layers.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs)
    converted = kb.to_bayesian(model)
    assert converted.get_layer("scaled") is model.get_layer("scaled")
    checks.assert_mean_mode_equal(model, converted, _inputs((2, 3)))

    outputs = keras.layers.Dense(2)(ConfigWithABug(name="buggy")(inputs))
    model = keras.Model(inputs, outputs)
    with pytest.raises(RuntimeError, match="a bug in get_config"):
        kb.to_bayesian(model)
    bayesian = keras.Model(inputs, kb.layers.DenseFlipout(2)(inputs))
    bayesian = keras.Model(inputs, ConfigWithABug()(bayesian(inputs)))
    with pytest.raises(RuntimeError, match="a bug in get_config"):
        kb.to_deterministic(bayesian)


DEPTHWISE_CASES = {
    "depthwise1d": (
        (9, 3),
        lambda: keras.layers.DepthwiseConv1D(
            3, strides=2, depth_multiplier=2, padding="same", activation="relu"
        ),
    ),
    "depthwise1d_dilated": (
        (9, 3),
        lambda: keras.layers.DepthwiseConv1D(2, dilation_rate=2),
    ),
    "depthwise2d": (
        (6, 6, 3),
        lambda: keras.layers.DepthwiseConv2D(
            3, depth_multiplier=2, padding="same", use_bias=False
        ),
    ),
    "depthwise2d_channels_first": (
        (3, 6, 6),
        lambda: keras.layers.DepthwiseConv2D(
            (3, 2), strides=(2, 1), data_format="channels_first"
        ),
    ),
    "separable1d": (
        (9, 3),
        lambda: keras.layers.SeparableConv1D(
            4, 3, depth_multiplier=2, padding="same", activation="tanh"
        ),
    ),
    "separable2d": (
        (6, 6, 3),
        lambda: keras.layers.SeparableConv2D(4, 3, dilation_rate=2),
    ),
    "separable2d_strided": (
        (7, 7, 3),
        lambda: keras.layers.SeparableConv2D(
            2, (3, 2), strides=2, use_bias=False
        ),
    ),
}


@pytest.mark.parametrize("estimator", ["flipout", "reparameterization"])
@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c) for c in sorted(DEPTHWISE_CASES)]
)
def test_depthwise_and_separable_layers(case, estimator):
    input_shape, make_layer = DEPTHWISE_CASES[case]
    model = keras.Sequential(
        [keras.Input(input_shape), make_layer(), keras.layers.Flatten()]
        + [keras.layers.Dense(2)]
    )
    checks.perturb(model)
    converted = _convert_quietly(model, estimator=estimator, moped_delta=0.3)
    original, new = model.layers[0], converted.layers[0]
    suffix = "Flipout" if estimator == "flipout" else "Reparameterization"
    assert type(new).__name__ == type(original).__name__ + suffix
    old_config, new_config = original.get_config(), new.get_config()
    for key in (
        "kernel_size",
        "strides",
        "padding",
        "data_format",
        "dilation_rate",
        "depth_multiplier",
        "filters",
        "activation",
        "use_bias",
    ):
        if key in old_config:
            assert (
                np.ravel(new_config[key]).tolist()
                == np.ravel(old_config[key]).tolist()
            ), key
    x = _inputs((3, *input_shape))
    skip_unless_model_runs(model, x)
    assert len(_check(model, converted, x, 0.3)) == 2


# -- `layers=` ---------------------------------------------------------------


def _selection_model():
    head = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(6, name="head_hidden"),
            keras.layers.Dense(3, name="head_out"),
        ],
        name="head",
    )
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(8, 3, name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, head(x))


@pytest.mark.parametrize(
    "layers, expected",
    [
        pytest.param(
            None, ["conv_a", "conv_b", "head_hidden", "head_out"], id="all"
        ),
        pytest.param(["head_out"], ["head_out"], id="last_layer"),
        pytest.param("head_out", ["head_out"], id="one_name"),
        pytest.param(["head"], ["head_hidden", "head_out"], id="nested_model"),
        pytest.param([keras.layers.Conv2D], ["conv_a", "conv_b"], id="class"),
        pytest.param(
            [keras.layers.Dense, "conv_a"],
            ["conv_a", "head_hidden", "head_out"],
            id="class_and_name",
        ),
        pytest.param(
            lambda layer: layer.name.endswith("_b"), ["conv_b"], id="callable"
        ),
        pytest.param(
            lambda layer: np.bool_(layer.count_params() > 100),
            ["conv_b"],
            id="callable_numpy_bool",
        ),
    ],
)
def test_layers_selects(layers, expected):
    model = _selection_model()
    checks.perturb(model)
    converted = _convert_quietly(model, layers=layers)
    assert _bayesian_names(converted) == expected
    checks.assert_mean_mode_equal(model, converted, _inputs((2, 6, 6, 2)))
    checks.assert_moped(model, converted, 0.1)


def test_layers_callable_sees_the_original_layers():
    model = _selection_model()
    seen = []
    _convert_quietly(model, layers=lambda layer: seen.append(layer) or True)
    originals = {id(layer) for layer in model._flatten_layers()}
    assert len(seen) == 4 and all(id(layer) in originals for layer in seen)


@pytest.mark.parametrize(
    "layers, message",
    [
        pytest.param(
            [], "Expected at least one layer name or class", id="empty"
        ),
        pytest.param(
            ["nope"], "The model has no layer named 'nope'.", id="unknown_name"
        ),
        pytest.param(
            ["bn"],
            "The layer 'bn' (BatchNormalization) neither is nor contains a "
            "convertible layer",
            id="not_convertible_name",
        ),
        pytest.param(
            [keras.layers.BatchNormalization],
            "The class BatchNormalization is not a convertible kind of layer",
            id="not_convertible_class",
        ),
        pytest.param(
            [keras.layers.Conv3D],
            "The model has no built Conv3D layer.",
            id="absent_class",
        ),
        pytest.param(
            [3],
            "The entry 3 is neither a name nor a Keras layer",
            id="bad_entry",
        ),
        pytest.param(
            3, "Expected None (every convertible layer), a list", id="bad_type"
        ),
        pytest.param(
            lambda layer: "yes",
            "Expected the callable to return True or False; it returned 'yes'"
            " for layer 'conv_a'.",
            id="callable_not_bool",
        ),
    ],
)
def test_layers_bad_values(layers, message):
    with pytest.raises(ValueError) as info:
        kb.to_bayesian(_selection_model(), layers=layers)
    text = str(info.value)
    assert text.startswith("Invalid value for argument `layers`.")
    assert message in text
    assert "Received: layers=" in text


# -- other arguments and warnings --------------------------------------------


def test_dropped_regularizers_and_constraints_are_named_once():
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(2, kernel_regularizer="l2", name="a"),
            keras.layers.Dense(
                2, bias_constraint="non_neg", kernel_regularizer="l1", name="b"
            ),
        ]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kb.to_bayesian(model)
    messages = [str(w.message) for w in caught if "dropped" in str(w.message)]
    assert len(messages) == 1
    assert "'a': ['kernel_regularizer']" in messages[0]
    assert "'b': ['kernel_regularizer', 'bias_constraint']" in messages[0]


def test_model_without_convertible_layers_warns():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.BatchNormalization()]
    )
    with pytest.warns(UserWarning, match="no Conv or Dense layer to convert"):
        kb.to_bayesian(model)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        pytest.param({"estimator": "local"}, "estimator", id="estimator"),
        pytest.param({"moped_delta": 0.0}, "moped_delta", id="delta_zero"),
        pytest.param(
            {"moped_delta": float("inf")}, "moped_delta", id="delta_inf"
        ),
        pytest.param({"moped_delta": True}, "moped_delta", id="delta_bool"),
        pytest.param({"kl_weight": -1.0}, "kl_weight", id="kl_weight"),
        pytest.param(
            {"posterior_value": "median"}, "posterior_value", id="value"
        ),
        pytest.param({"seed": 1.5}, "seed", id="seed"),
    ],
)
def test_bad_arguments(kwargs, argument):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    value = next(iter(kwargs.values()))
    with pytest.raises(
        ValueError,
        match=re.escape(f"argument `{argument}`")
        + ".*"
        + re.escape(f"Received: {argument}={value!r}"),
    ):
        kb.to_bayesian(model, **kwargs)


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: keras.layers.Dense(2), id="layer"),
        pytest.param(
            lambda: keras.Sequential([keras.layers.Dense(2)]), id="unbuilt"
        ),
    ],
)
def test_needs_a_built_model(model):
    with pytest.raises(ValueError, match="argument `model`"):
        kb.to_bayesian(model())


def test_original_still_predicts_after_the_converted_model():
    # The layers `to_bayesian` leaves alone are copies holding copies of
    # the original's values: on JAX a shared array would be donated (freed)
    # by the converted model's compiled predict.
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(6, activation="relu", name="hidden"),
            keras.layers.Dense(3, name="head"),
        ]
    )
    x = np.ones((4, 8), "float32")
    expected = model.predict(x, verbose=0)
    converted = kb.to_bayesian(model, layers=["head"])
    kb.set_posterior_value(converted, "mean")
    np.testing.assert_allclose(converted.predict(x, verbose=0), expected)
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)
