"""`run_layer_test`: the checks every keras-bayes layer must pass.

One call runs, for a layer class and its arguments:

- config round trip (`get_config` / `from_config` and Keras serialization);
- build: the expected variables, made once, with the documented names;
- symbolic call: a `keras.Input` with an unknown batch gives the output shape
  of `compute_output_shape`, without tracing random ops;
- eager call: output shape, one scalar float32 KL loss per call (Bayesian
  layers), finite values;
- one `fit` step in a `Sequential` model that changes the weights;
- `.keras` save and load: same config, same weights, same mean-mode outputs;
- mixed precision: outputs in the compute dtype, variables and KL in float32.
"""

import os
import tempfile

import keras
import numpy as np

import keras_bayes as kb
from keras_bayes.layers.variational import VariationalLayer
from tests.helpers import normal_inputs, to_numpy
from tests.keras_support import skip_unless_keras_runs


def _conv_name(rank, transpose):
    return f"Conv{rank}D" + ("Transpose" if transpose else "")


# By (rank, transpose): Keras' deterministic convolution, and keras-bayes'
# (Reparameterization, Flipout) pair with the same geometry.
CONV_KEYS = [(rank, t) for t in (False, True) for rank in (1, 2, 3)]
KERAS_CONV = {key: getattr(keras.layers, _conv_name(*key)) for key in CONV_KEYS}
BAYES_CONV = {
    key: (
        getattr(kb.layers, _conv_name(*key) + "Reparameterization"),
        getattr(kb.layers, _conv_name(*key) + "Flipout"),
    )
    for key in CONV_KEYS
}
# The Bayesian layer classes, for tests that walk all of them.
CONV_CLASSES = [c for r in (1, 2, 3) for c in BAYES_CONV[r, False]]
TRANSPOSE_CLASSES = [c for r in (1, 2, 3) for c in BAYES_CONV[r, True]]
DENSE_CLASSES = [
    kb.layers.DenseReparameterization,
    kb.layers.DenseFlipout,
    kb.layers.DenseLocalReparameterization,
]
# The variables of a Bayesian layer with the default posteriors (a
# stochastic bias adds `bias_untransformed_scale`), for
# `expected_variable_names`.
POSTERIOR_NAMES = ["kernel_loc", "kernel_untransformed_scale", "bias_loc"]
# The variables of a rank-1 layer with a bias.
RANK1_NAMES = [
    "kernel",
    "alpha_loc",
    "alpha_untransformed_scale",
    "gamma_loc",
    "gamma_untransformed_scale",
    "bias",
]
CONTROL_NAMES = ["kl_weight", "posterior_sample"]


_ESTIMATOR_SUFFIXES = (
    "LocalReparameterization",
    "Reparameterization",
    "Flipout",
    "Rank1",
)


def keras_counterpart(layer_cls):
    """The `keras.layers` class with the same map as a keras-bayes layer
    (None for a layer kind that Keras does not have)."""
    name = layer_cls.__name__.removeprefix("Batched")
    for suffix in _ESTIMATOR_SUFFIXES:
        name = name.removesuffix(suffix)
    return getattr(keras.layers, name, None)


def _mean_outputs(model, x):
    from keras_bayes import set_posterior_value

    set_posterior_value(model, "mean")
    try:
        return to_numpy(model(x))
    finally:
        set_posterior_value(model, "sample")


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    expected_output_shape,
    expected_variable_names=None,
    run_fit=True,
    run_save=True,
    run_mixed_precision=True,
):
    """Run the shared checks; `input_shape` includes the batch axis."""
    bayesian = issubclass(layer_cls, VariationalLayer)
    keras_cls = keras_counterpart(layer_cls)
    member_shape = _member_input_shape(layer_cls, init_kwargs, input_shape)
    if keras_cls is not None:
        skip_unless_keras_runs(keras_cls, init_kwargs, member_shape)
    x = normal_inputs(input_shape)

    # Config round trip, directly and through Keras serialization.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    assert layer_cls.from_config(config).get_config() == config
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(revived) is layer_cls
    assert revived.get_config() == config

    # Symbolic call with an unknown batch size.
    symbolic = keras.Input(shape=input_shape[1:], batch_size=None)
    symbolic_out = layer(symbolic)
    expected_symbolic = (None,) + tuple(expected_output_shape[1:])
    assert tuple(symbolic_out.shape) == expected_symbolic, (
        symbolic_out.shape,
        expected_symbolic,
    )
    assert layer.built
    names = sorted(v.name for v in layer.weights)
    if expected_variable_names is not None:
        assert names == sorted(expected_variable_names), names
    n_weights = len(layer.weights)

    # Eager call: shape, losses, build happened once.
    y = layer(x)
    assert tuple(y.shape) == tuple(expected_output_shape)
    assert tuple(layer.compute_output_shape(input_shape)) == tuple(
        expected_output_shape
    )
    assert len(layer.weights) == n_weights, "the layer was built twice"
    assert np.all(np.isfinite(to_numpy(y)))
    if bayesian:
        assert len(layer.losses) == 1, layer.losses
        kl = layer.losses[0]
        assert tuple(kl.shape) == ()
        assert keras.backend.standardize_dtype(kl.dtype) == "float32"
        assert np.isfinite(to_numpy(kl))
        layer(x)
        assert len(layer.losses) == 1, "losses accumulate across calls"

    # A check that Keras' own layer cannot run on this device is skipped
    # (after the checks before it passed), never run differently.
    if run_fit:
        if keras_cls is not None:
            skip_unless_keras_runs(
                keras_cls, init_kwargs, member_shape, fit=True
            )
        _check_fit(layer_cls, init_kwargs, x, expected_output_shape)
    if run_save:
        _check_save_load(layer_cls, init_kwargs, x)
    if run_mixed_precision:
        if keras_cls is not None:
            skip_unless_keras_runs(
                keras_cls, init_kwargs, member_shape, dtype="mixed_float16"
            )
        _check_mixed_precision(layer_cls, init_kwargs, x, bayesian)


def _member_input_shape(layer_cls, init_kwargs, input_shape):
    """One member's input shape (inputs may carry `batch_shape` axes)."""
    k = len(tuple(init_kwargs.get("batch_shape", ())))
    if not k:
        return tuple(input_shape)
    member_ndim = layer_cls(**init_kwargs)._map.members.member_ndim
    if k and len(input_shape) == member_ndim + k:
        return tuple(input_shape[:1]) + tuple(input_shape[1 + k :])
    return tuple(input_shape)


def _check_fit(layer_cls, init_kwargs, x, expected_output_shape):
    model = keras.Sequential(
        [keras.Input(shape=x.shape[1:]), layer_cls(**init_kwargs)]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    before = [to_numpy(v) for v in model.trainable_weights]
    y = normal_inputs(expected_output_shape, seed=1)
    history = model.fit(x, y, epochs=1, batch_size=len(x), verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [to_numpy(v) for v in model.trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


def _check_save_load(layer_cls, init_kwargs, x):
    model = keras.Sequential(
        [keras.Input(shape=x.shape[1:]), layer_cls(**init_kwargs)]
    )
    expected = _mean_outputs(model, x)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    original, restored = model.layers[-1], loaded.layers[-1]
    assert type(restored) is layer_cls
    assert restored.get_config() == original.get_config()
    saved = {v.name: to_numpy(v) for v in original.weights}
    for variable in restored.weights:
        np.testing.assert_array_equal(to_numpy(variable), saved[variable.name])
    np.testing.assert_allclose(_mean_outputs(loaded, x), expected, rtol=1e-6)


def _check_mixed_precision(layer_cls, init_kwargs, x, bayesian):
    layer = layer_cls(**init_kwargs, dtype="mixed_float16")
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    for variable in layer.weights:
        assert variable.dtype == "float32", variable.name
    if bayesian:
        kl = layer.losses[0]
        assert keras.backend.standardize_dtype(kl.dtype) == "float32"
        assert np.isfinite(to_numpy(kl))
