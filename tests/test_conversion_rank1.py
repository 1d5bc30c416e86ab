"""`kb.to_bayesian(model, estimator="rank1", ensemble_size=K)`: a trained
network made a rank-1 ensemble, and the layers that carry its members in
the batch axis (`MembersInBatch`, `MembersFromBatch`).

References: the original Keras model (with every factor set to exactly 1,
each member in mean mode computes what it computes) and NumPy (the member
layout of the batch axis).
"""

import warnings

import keras
import numpy as np
import pytest

import keras_bayes as kb
from tests import conversion_checks as checks

K = 3


def _cnn():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.BatchNormalization(name="norm"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2DTranspose(2, 2, strides=2, name="up"),
            keras.layers.Flatten(),
            keras.layers.Dense(5, name="head"),
        ]
    )
    checks.perturb(model)
    return model


def _inputs(n=4, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 3)).astype("float32")


def _convert(model, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = kb.to_bayesian(
            model, estimator="rank1", ensemble_size=K, seed=0, **kwargs
        )
    messages = [
        str(w.message)
        for w in caught
        if str(w.message).startswith("to_bayesian")
    ]
    return converted, messages


def _factors_to_one(model):
    for layer in kb.workflows.bayesian_layers(model):
        for name in ("alpha_loc", "gamma_loc"):
            variable = getattr(layer, name)
            variable.assign(np.ones(tuple(variable.shape), "float32"))


def test_layers_become_rank1_with_the_trained_weights():
    model = _cnn()
    converted, messages = _convert(model)
    assert messages == []
    layers = {
        layer.name: layer for layer in kb.workflows.bayesian_layers(converted)
    }
    assert {name: type(layer) for name, layer in layers.items()} == {
        "conv": kb.layers.Conv2DRank1,
        "up": kb.layers.Conv2DTransposeRank1,
        "head": kb.layers.DenseRank1,
    }
    for name, layer in layers.items():
        source = model.get_layer(name)
        assert layer.batch_shape == (K,)
        np.testing.assert_array_equal(
            checks.numpy(layer.kernel), checks.numpy(source.kernel)
        )
        np.testing.assert_array_equal(
            checks.numpy(layer.bias),
            np.tile(checks.numpy(source.bias), (K, 1)),
        )
        # Factors centred on 1 with spread 0.1 (FactorNormal's default):
        # over these few hundred draws the mean is within 0.05 of 1.
        for factor in ("alpha_loc", "gamma_loc"):
            values = checks.numpy(getattr(layer, factor))
            assert values.shape[0] == K
            assert np.all(np.abs(values - 1.0) < 0.6)
    locs = np.concatenate(
        [
            checks.numpy(getattr(layer, f)).ravel()
            for layer in layers.values()
            for f in ("alpha_loc", "gamma_loc")
        ]
    )
    assert abs(locs.mean() - 1.0) < 0.05 and 0.05 < locs.std() < 0.15


def test_each_member_at_unit_factors_is_the_original():
    model = _cnn()
    converted, _ = _convert(model)
    _factors_to_one(converted)
    kb.set_posterior_value(converted, "mean")
    x = _inputs()
    got = checks.numpy(converted(x))
    assert got.shape == (4, K, 5)
    expected = checks.numpy(model(x))
    for b in range(K):
        np.testing.assert_allclose(got[:, b], expected, rtol=1e-5, atol=1e-5)


def test_members_differ_and_sample_mode_draws():
    model = _cnn()
    converted, _ = _convert(model)
    kb.set_posterior_value(converted, "mean")
    x = _inputs()
    mean = checks.numpy(converted(x))
    # Different factors: the members give different outputs.
    assert checks.max_difference(mean[:, 0], mean[:, 1]) > 1e-4
    kb.set_posterior_value(converted, "sample")
    first, second = checks.numpy(converted(x)), checks.numpy(converted(x))
    assert checks.max_difference(first, second) > 1e-4


def test_fit_with_labels_per_member_and_round_trip(tmp_path):
    model = _cnn()
    converted, _ = _convert(model, kl_weight=1 / 16)
    x = _inputs(16)
    y = np.repeat(np.arange(16)[:, None] % 5, K, axis=1)
    converted.compile(
        optimizer=keras.optimizers.SGD(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = converted.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["kl"][-1] > 0
    path = tmp_path / "rank1.keras"
    converted.save(path)
    loaded = keras.saving.load_model(path)
    for m in (converted, loaded):
        kb.set_posterior_value(m, "mean")
    np.testing.assert_allclose(
        checks.numpy(loaded(x)), checks.numpy(converted(x)), atol=1e-6
    )
    averaged = keras.Sequential(
        [loaded, keras.layers.Softmax(), kb.layers.MemberAverage()]
    )
    probs = checks.numpy(averaged(x))
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)


def test_to_deterministic_of_the_ensemble():
    model = _cnn()
    converted, _ = _convert(model)
    plain = kb.to_deterministic(converted)
    assert kb.workflows.bayesian_layers(plain) == []
    kb.set_posterior_value(converted, "mean")
    x = _inputs()
    np.testing.assert_allclose(
        checks.numpy(plain(x)), checks.numpy(converted(x)), atol=1e-5
    )


def test_depthwise_layers_stay_deterministic_and_are_named():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.DepthwiseConv2D(3, name="depthwise"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, name="head"),
        ]
    )
    converted, messages = _convert(model)
    assert [
        layer.name for layer in kb.workflows.bayesian_layers(converted)
    ] == ["head"]
    assert len(messages) == 1
    assert (
        "'depthwise' (DepthwiseConv2D, 30 parameters): keras_bayes.layers "
        "has no DepthwiseConv2DRank1 in this version" in messages[0]
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"estimator": "rank1"},
            'estimator="rank1" needs the number of members, a positive int. '
            "Received: ensemble_size=None",
        ),
        (
            {"estimator": "rank1", "ensemble_size": 0},
            "Expected a strictly positive integer. Received: ensemble_size=0",
        ),
        (
            {"estimator": "rank1", "ensemble_size": True},
            "Expected a strictly positive integer. "
            "Received: ensemble_size=True",
        ),
        (
            {"estimator": "flipout", "ensemble_size": 4},
            'Expected None: only estimator="rank1" has members. '
            "Received: ensemble_size=4",
        ),
        (
            {"estimator": "rank1", "ensemble_size": 4, "prior": "laplace"},
            "Invalid value for argument `prior`. Expected the default: with "
            'estimator="rank1" the kernels stay point estimates and the '
            "factors take the rank-1 layers' prior, N(1, 0.1). "
            "Received: prior='laplace'",
        ),
    ],
)
def test_bad_ensemble_arguments(kwargs, message):
    model = _cnn()
    before = [checks.numpy(v) for v in model.weights]
    with pytest.raises(ValueError) as error:
        kb.to_bayesian(model, **kwargs)
    assert message in str(error.value)
    for old, variable in zip(before, model.weights):
        np.testing.assert_array_equal(old, checks.numpy(variable))


# -- the layers that carry members in the batch axis --------------------------


def test_members_in_batch_reads_member_major_blocks():
    inner = kb.layers.DenseRank1(3, batch_shape=(2,), posterior_value="mean")
    layer = kb.layers.MembersInBatch(inner)
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    got = checks.numpy(layer(x))
    assert got.shape == (6, 3)
    kernel = checks.numpy(inner.kernel)
    alpha, gamma = checks.numpy(inner.alpha_loc), checks.numpy(inner.gamma_loc)
    bias = checks.numpy(inner.bias)
    for b in range(2):
        rows = slice(3 * b, 3 * b + 3)
        expected = ((x[rows] * alpha[b]) @ kernel) * gamma[b] + bias[b]
        np.testing.assert_allclose(got[rows], expected, rtol=1e-5, atol=1e-5)


def test_members_from_batch_layout():
    x = np.arange(24, dtype="float32").reshape(6, 4)
    got = checks.numpy(kb.layers.MembersFromBatch(3)(x))
    np.testing.assert_array_equal(got, x.reshape(3, 2, 4).transpose(1, 0, 2))
    layer = kb.layers.MembersFromBatch(3)
    assert layer.compute_output_shape((6, 4)) == (2, 3, 4)
    again = kb.layers.MembersFromBatch.from_config(layer.get_config())
    assert again.members == 3


def test_members_in_batch_needs_one_member_axis():
    with pytest.raises(ValueError) as error:
        kb.layers.MembersInBatch(keras.layers.Dense(2, name="plain"))
    assert "Expected a layer with one member axis (`batch_shape=(K,)`)." in (
        str(error.value)
    )
    with pytest.raises(ValueError, match="Received: members=0"):
        kb.layers.MembersFromBatch(0)
