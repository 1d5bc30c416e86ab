"""Configs, Keras serialization and `.keras` files of layers and models.

Round trips keep every argument (custom priors and posterior initializers
included); a saved model comes back with its weights, priors, `kl_weight`
and `posterior_value` (also when they were changed after build), gives the
same mean-mode outputs, and still trains with the loaded `kl_weight`.
Damaged and old files are the subject of `test_save_load_faults.py`.
"""

import json

import keras
import numpy as np
import pytest

import keras_bayes as kb
from tests.helpers import layer_kl, normal_inputs, to_numpy
from tests.layer_test import CONV_CLASSES, DENSE_CLASSES, TRANSPOSE_CLASSES


def _json_round_trip(obj):
    """Keras serialization through JSON text, as in a `.keras` file."""
    text = json.dumps(keras.saving.serialize_keras_object(obj))
    return keras.saving.deserialize_keras_object(json.loads(text))


def _revivals(obj, get):
    """A prior or posterior revived from its config, through JSON, and by
    its module's `get` from its Keras serialization."""
    return [
        type(obj).from_config(obj.get_config()),
        _json_round_trip(obj),
        get(keras.saving.serialize_keras_object(obj)),
    ]


def _custom_priors():
    return [
        kb.priors.Normal(0.5, 2.0),
        kb.priors.ScaleMixtureNormal(0.3, 1.5, 0.01),
        kb.priors.SpikeAndSlab(),
        kb.priors.SpikeAndSlab(0.2, spike_scale=0.5, slab_scale=100.0),
    ]


def _custom_posteriors():
    return [
        kb.posteriors.MeanFieldNormal(),
        kb.posteriors.MeanFieldNormal(
            loc_initializer=keras.initializers.Constant(0.3),
            untransformed_scale_initializer=keras.initializers.RandomNormal(
                -5.0, 0.01, seed=3
            ),
        ),
        kb.posteriors.MeanFieldNormal(
            loc_initializer="he_normal",
            untransformed_scale_initializer={
                "class_name": "Constant",
                "config": {"value": -4.0},
            },
        ),
        kb.posteriors.Deterministic(),
        kb.posteriors.Deterministic(keras.initializers.RandomUniform(seed=1)),
    ]


def _initializers(posterior):
    if isinstance(posterior, kb.posteriors.MeanFieldNormal):
        return [
            posterior.loc_initializer,
            posterior.untransformed_scale_initializer,
        ]
    return [posterior.loc_initializer]


def _assert_same_initializers(original, revived):
    for a, b in zip(_initializers(original), _initializers(revived)):
        assert type(a) is type(b)
        assert a.get_config() == b.get_config()


# -- priors and posteriors -------------------------------------------------


def test_prior_round_trips():
    weights = np.linspace(-3.0, 3.0, 13).astype("float32")
    for prior in _custom_priors():
        config = prior.get_config()
        # The config holds plain Python floats, so that it is valid JSON.
        assert json.loads(json.dumps(config)) == config
        for revived in _revivals(prior, kb.priors.get):
            assert type(revived) is type(prior), revived
            assert revived.get_config() == config
            np.testing.assert_array_equal(
                to_numpy(revived.log_prob(weights)),
                to_numpy(prior.log_prob(weights)),
            )
    # The defaults are part of the config, not implied.
    assert kb.priors.SpikeAndSlab().get_config() == {
        "mixture_weight": 0.5,
        "spike_scale": 1.0,
        "slab_scale": 2000.0,
    }
    assert kb.priors.Normal(0.5, 2.0).get_config() == {"loc": 0.5, "scale": 2.0}


def test_posterior_round_trips():
    for posterior in _custom_posteriors():
        config = posterior.get_config()
        json.dumps(config)
        for revived in _revivals(posterior, kb.posteriors.get):
            assert type(revived) is type(posterior), revived
            assert revived.get_config() == config
            _assert_same_initializers(posterior, revived)
    # A seeded or constant initializer gives the same values once revived.
    posterior = _custom_posteriors()[1]
    revived = _json_round_trip(posterior)
    for a, b in zip(_initializers(posterior), _initializers(revived)):
        np.testing.assert_array_equal(to_numpy(a((3, 2))), to_numpy(b((3, 2))))


# -- layers ----------------------------------------------------------------


def _layer_cases():
    """Every layer class with every Bayesian argument away from its default.

    Posterior initializers are seeded or constant, so that a revived layer
    builds the same weights as the original.
    """
    kernel_posterior = kb.posteriors.MeanFieldNormal(
        loc_initializer=keras.initializers.RandomNormal(0.2, 0.05, seed=5),
        untransformed_scale_initializer=keras.initializers.Constant(-4.0),
    )
    bayesian = {
        "activation": "tanh",
        "kernel_posterior": kernel_posterior,
        "kernel_prior": kb.priors.ScaleMixtureNormal(0.3, 1.5, 0.01),
        "bias_posterior": kb.posteriors.MeanFieldNormal(
            loc_initializer=keras.initializers.Constant(0.1),
            untransformed_scale_initializer="zeros",
        ),
        "bias_prior": kb.priors.Normal(0.5, 2.0),
        "kl_weight": 0.125,
        "posterior_value": "mean",
        "seed": 11,
        "name": "custom_name",
    }
    cases = []
    for cls in CONV_CLASSES:
        rank = cls.rank
        conv = {
            "filters": 4,
            "kernel_size": (3,) + (2,) * (rank - 1),
            "strides": 1,
            "padding": "causal" if rank == 1 else "same",
            "data_format": "channels_last",
            "dilation_rate": (2,) + (1,) * (rank - 1),
            "groups": 2,
        }
        cases.append((cls, {**conv, **bayesian}, (2,) + (5,) * rank + (2,)))
    for cls in TRANSPOSE_CLASSES:
        rank = cls.rank
        transpose = {
            "filters": 3,
            "kernel_size": (3,) + (2,) * (rank - 1),
            "strides": (2,) + (1,) * (rank - 1),
            "padding": "same",
            "output_padding": (1,) + (0,) * (rank - 1),
            "data_format": "channels_last",
            "dilation_rate": 1,
        }
        cases.append(
            (cls, {**transpose, **bayesian}, (2,) + (4,) * rank + (2,))
        )
    for cls in DENSE_CLASSES:
        cases.append((cls, {"units": 3, **bayesian}, (2, 4)))
    # A batch of posteriors.
    cases.append(
        (
            kb.layers.Conv2DFlipout,
            {"filters": 2, "kernel_size": 2, "batch_shape": (2, 3), **bayesian},
            (2, 4, 4, 1),
        )
    )
    cases.append(
        (
            kb.layers.DenseReparameterization,
            {"units": 2, "batch_shape": 3, **bayesian},
            (2, 3, 4),
        )
    )
    return cases


def test_layer_config_round_trips():
    for cls, kwargs, input_shape in _layer_cases():
        layer = cls(**kwargs)
        config = layer.get_config()
        assert config["seed"] == 11 and type(config["seed"]) is int
        assert config["kl_weight"] == 0.125
        assert config["posterior_value"] == "mean"
        for revived in [cls.from_config(config), _json_round_trip(layer)]:
            assert type(revived) is cls
            assert revived.get_config() == config, cls.__name__
            for weight in ("kernel", "bias"):
                prior = getattr(layer, f"{weight}_prior")
                revived_prior = getattr(revived, f"{weight}_prior")
                assert type(revived_prior) is type(prior)
                assert revived_prior.get_config() == prior.get_config()
                _assert_same_initializers(
                    getattr(layer, f"{weight}_posterior"),
                    getattr(revived, f"{weight}_posterior"),
                )
        # Built from the revived config: the same initial weights.
        layer.build(input_shape)
        revived.build(input_shape)
        for a, b in zip(layer.weights, revived.weights):
            assert a.name == b.name
            np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_built_layer_config_has_values_set_after_build():
    layer = kb.layers.Conv2DFlipout(2, 3, kl_weight=1.0)
    layer.build((None, 5, 5, 1))
    layer.kl_weight = 0.25
    layer.posterior_value = "mean"
    config = layer.get_config()
    assert config["kl_weight"] == 0.25
    assert config["posterior_value"] == "mean"
    revived = _json_round_trip(layer)
    assert revived.kl_weight == 0.25
    assert revived.posterior_value == "mean"


def test_seed_in_config():
    layer = kb.layers.DenseReparameterization(3, seed=np.int64(7))
    # A numpy integer is stored as a Python int: the config is valid JSON.
    assert type(layer.get_config()["seed"]) is int
    assert layer.get_config()["seed"] == 7
    assert kb.layers.DenseReparameterization(3).get_config()["seed"] is None

    # The seed is the layer's noise: the same seed and the same weights
    # give the same draws, another seed other draws.
    x = normal_inputs((4, 5))
    same = kb.layers.DenseReparameterization.from_config(layer.get_config())
    other = kb.layers.DenseReparameterization(3, seed=8)
    for candidate in (layer, same, other):
        candidate.build(x.shape)
    same.set_weights(layer.get_weights())
    other.set_weights(layer.get_weights())
    y = to_numpy(layer(x))
    np.testing.assert_array_equal(to_numpy(same(x)), y)
    assert not np.allclose(to_numpy(other(x)), y)


def test_shared_posterior_gives_different_initial_weights(tmp_path):
    posterior = kb.posteriors.MeanFieldNormal()
    first = kb.layers.DenseFlipout(6, kernel_posterior=posterior)
    second = kb.layers.DenseFlipout(6, kernel_posterior=posterior)
    model = keras.Sequential([keras.Input((6,)), first, second])
    for name in ("kernel_loc", "kernel_untransformed_scale"):
        a = to_numpy(getattr(first, name))
        b = to_numpy(getattr(second, name))
        assert a.shape == b.shape == (6, 6)
        # Continuous draws: equal entries would mean a repeated seed.
        assert not np.any(a == b), name
    # Batches of posteriors too, across layers and across members.
    batched = [
        kb.layers.DenseFlipout(6, kernel_posterior=posterior, batch_shape=2)
        for _ in range(2)
    ]
    for layer in batched:
        layer.build((None, 6))
    a, b = (to_numpy(layer.kernel_loc) for layer in batched)
    assert not np.any(a == b)
    assert not np.any(a[0] == a[1])

    # The shared object is unchanged and its config holds no seed.
    config = posterior.get_config()
    assert first.get_config()["kernel_posterior"]["config"] == config
    assert config["loc_initializer"]["config"]["seed"] is None

    # Loading does not draw them again: the saved values come back.
    path = tmp_path / "shared.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for original, restored in zip(model.layers, loaded.layers):
        for a, b in zip(original.weights, restored.weights):
            np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


# -- saved models ----------------------------------------------------------


def _sequential_cnn():
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            kb.layers.Conv2DFlipout(
                4,
                3,
                padding="same",
                activation="relu",
                kernel_prior=kb.priors.Normal(0.5, 2.0),
                seed=1,
            ),
            kb.layers.Conv2DReparameterization(
                3,
                2,
                strides=2,
                kernel_prior=kb.priors.ScaleMixtureNormal(0.3, 1.5, 0.01),
                bias_posterior="mean_field_normal",
                bias_prior=kb.priors.SpikeAndSlab(),
            ),
            keras.layers.Flatten(),
            kb.layers.DenseFlipout(
                3,
                kernel_posterior=kb.posteriors.MeanFieldNormal(
                    untransformed_scale_initializer=keras.initializers.Constant(
                        -4.0
                    )
                ),
            ),
        ]
    )


def _functional_cnn():
    inputs = keras.Input((8, 2))
    causal = kb.layers.Conv1DReparameterization(
        3, 3, padding="causal", kernel_prior=kb.priors.Normal(0.5, 2.0)
    )(inputs)
    dilated = kb.layers.Conv1DFlipout(
        3,
        3,
        dilation_rate=2,
        padding="same",
        kernel_prior=kb.priors.SpikeAndSlab(),
        activation="relu",
    )(inputs)
    merged = keras.layers.Concatenate()([causal, dilated])
    pooled = keras.layers.GlobalAveragePooling1D()(merged)
    outputs = kb.layers.DenseLocalReparameterization(
        3,
        bias_posterior="mean_field_normal",
        bias_prior=kb.priors.Normal(),
    )(pooled)
    return keras.Model(inputs, outputs)


def _bayesian(model):
    return [
        layer
        for layer in model.layers
        if isinstance(layer, kb.layers.VariationalLayer)
    ]


def _mean_outputs(model, x):
    kb.set_posterior_value(model, "mean")
    return to_numpy(model(x))


@pytest.mark.parametrize(
    "make_model, input_shape",
    [(_sequential_cnn, (4, 6, 6, 2)), (_functional_cnn, (4, 8, 2))],
    ids=["sequential", "functional"],
)
def test_saved_model_round_trip(make_model, input_shape, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=input_shape).astype("float32")
    y = rng.normal(size=(input_shape[0], 3)).astype("float32")
    model = make_model()
    layers = _bayesian(model)
    # Changed after build: stored in variables, not only in the config.
    kl_layer, mean_layer = layers[0], layers[1]
    assert isinstance(kl_layer.kernel_prior, kb.priors.Normal)
    kl_layer.kl_weight = 0.25
    mean_layer.posterior_value = "mean"

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    loaded_layers = _bayesian(loaded)
    assert len(loaded_layers) == len(layers) == 3

    for original, restored in zip(model.layers, loaded.layers):
        assert type(restored) is type(original)
        assert restored.get_config() == original.get_config()
        saved = {v.name: to_numpy(v) for v in original.weights}
        assert sorted(saved) == sorted(v.name for v in restored.weights)
        for variable in restored.weights:
            np.testing.assert_array_equal(
                to_numpy(variable), saved[variable.name]
            )
    for original, restored in zip(layers, loaded_layers):
        for weight in ("kernel", "bias"):
            prior = getattr(original, f"{weight}_prior")
            revived = getattr(restored, f"{weight}_prior")
            assert type(revived) is type(prior)
            if prior is not None:
                assert revived.get_config() == prior.get_config()

    restored_kl, restored_mean = loaded_layers[0], loaded_layers[1]
    assert restored_kl.kl_weight == 0.25
    assert [layer.kl_weight for layer in loaded_layers[1:]] == [1.0, 1.0]
    assert restored_mean.posterior_value == "mean"
    assert restored_kl.posterior_value == "sample"
    assert loaded_layers[2].posterior_value == "sample"

    np.testing.assert_allclose(
        _mean_outputs(loaded, x), _mean_outputs(model, x), rtol=1e-6
    )

    # The loaded model trains, and its KL uses the loaded weight 0.25.
    kb.set_posterior_value(loaded, "sample")
    loaded.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    before = [to_numpy(v) for v in loaded.trainable_weights]
    history = loaded.fit(x, y, epochs=1, batch_size=len(x), verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [to_numpy(v) for v in loaded.trainable_weights]
    assert all(a.shape == b.shape for a, b in zip(before, after))
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))

    _mean_outputs(loaded, x)
    # The kernel prior is N(0.5, 2) and the bias deterministic: the layer's
    # loss is 0.25 times the closed-form kernel KL, computed in NumPy.
    (loss,) = restored_kl.losses
    np.testing.assert_allclose(
        to_numpy(loss), 0.25 * layer_kl(restored_kl), rtol=1e-5
    )


def test_settings_survive_a_round_trip(tmp_path):
    layer = kb.layers.Conv2DReparameterization(
        3,
        2,
        kernel_prior=kb.priors.ScaleMixtureNormal(0.3, 1.5, 0.01),
        bias_posterior="mean_field_normal",
        bias_prior=kb.priors.Normal(0.5, 2.0),
        kl_weight=0.5,
        seed=11,
        batch_shape=(2,),
        name="bayes",
    )
    model = keras.Sequential([keras.Input((5, 4, 2)), layer])
    # Changed after build: stored in the control variables, not the config
    # the layer was made with.
    layer.kl_weight = 0.125
    layer.posterior_value = "mean"
    path = tmp_path / "settings.keras"
    model.save(path)

    restored = kb.saving.load_model(path).get_layer("bayes")
    assert restored.kl_weight == 0.125
    assert restored.posterior_value == "mean"
    assert restored.seed == 11
    assert restored.batch_shape == (2,)
    assert isinstance(restored.kernel_prior, kb.priors.ScaleMixtureNormal)
    assert restored.kernel_prior.get_config() == {
        "mixture_weight": 0.3,
        "scale1": 1.5,
        "scale2": 0.01,
    }
    assert isinstance(restored.bias_prior, kb.priors.Normal)
    assert restored.bias_prior.get_config() == {"loc": 0.5, "scale": 2.0}
    assert isinstance(restored.bias_posterior, kb.posteriors.MeanFieldNormal)
    assert restored.get_config() == layer.get_config()
    assert [v.name for v in restored.weights] == [v.name for v in layer.weights]
    for restored_var, saved_var in zip(restored.weights, layer.weights):
        np.testing.assert_array_equal(
            to_numpy(restored_var), to_numpy(saved_var)
        )
    x = normal_inputs((3, 5, 4, 2))
    np.testing.assert_array_equal(to_numpy(restored(x)), to_numpy(layer(x)))
