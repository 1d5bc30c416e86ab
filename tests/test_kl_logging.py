"""`fit` reports the weighted KL as `kl`, apart from the data loss.

The `kl` of `History` must be the KL that entered the loss: with a
learning rate of 0 the weights (hence the closed-form KL) stay put, so
`kl` equals the NumPy KL of the variables, and `loss - kl` equals the data
loss of the same batches computed another way (mean mode makes the outputs
deterministic). A Monte Carlo KL (mixture prior) is checked through
`loss - kl` alone.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_bayes as kb
from tests.backend_marks import skip_on

NUM = 48


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NUM, 6, 6, 1)).astype("float32")
    y = rng.integers(0, 3, NUM)
    return x, y


def _model(kernel_prior="normal"):
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            kb.layers.Conv2DFlipout(
                3,
                3,
                kl_weight=0.5 / NUM,
                kernel_prior=kernel_prior,
                posterior_value="mean",
            ),
            keras.layers.Flatten(),
            kb.layers.DenseReparameterization(
                3, kl_weight=2.0 / NUM, posterior_value="mean"
            ),
        ]
    )


def _numpy_weighted_kl(model):
    total = 0.0
    for layer in kb.workflows.bayesian_layers(model):
        for weight in layer.posterior_weights:
            if weight.prior is None:
                continue
            loc = ops.convert_to_numpy(weight.variables["loc"]).astype(
                "float64"
            )
            u = ops.convert_to_numpy(weight.variables["untransformed_scale"])
            scale = np.logaddexp(0.0, u.astype("float64")) + 1e-5
            kl = np.sum(-np.log(scale) + (scale**2 + loc**2) / 2 - 0.5)
            total += layer.kl_weight * kl
    return total


def _data_loss(model, x, y):
    probs = ops.convert_to_numpy(model(x))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return float(ops.convert_to_numpy(loss(y, probs)))


@pytest.mark.parametrize(
    "jit_compile",
    [
        pytest.param("auto", id="default"),
        pytest.param(
            True,
            id="jit_compile",
            marks=skip_on(
                "torch",
                reason="jit_compile=True means torch.compile on torch; the "
                "XLA-compiled step is TensorFlow's and JAX's",
            ),
        ),
    ],
)
def test_kl_in_history_is_the_kl_in_the_loss(jit_compile):
    x, y = _data()
    model = _model()
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    assert set(history) == {"loss", "kl"}
    expected_kl = _numpy_weighted_kl(model)
    np.testing.assert_allclose(history["kl"], [expected_kl] * 2, rtol=1e-5)
    data_loss = _data_loss(model, x, y)
    np.testing.assert_allclose(
        np.array(history["loss"]) - np.array(history["kl"]),
        [data_loss] * 2,
        rtol=1e-4,
        atol=1e-5,
    )


def test_monte_carlo_kl_in_history_is_the_kl_in_the_loss():
    x, y = _data(1)
    model = _model(kernel_prior=kb.priors.ScaleMixtureNormal())
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    # A new estimate every step; the data loss is deterministic.
    np.testing.assert_allclose(
        history["loss"][0] - history["kl"][0],
        _data_loss(model, x, y),
        rtol=1e-4,
        atol=1e-5,
    )
    assert history["kl"][0] != pytest.approx(0.0)


def test_progress_bar_and_evaluate(capsys):
    x, y = _data(2)
    model = _model()
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(
        x, y, batch_size=16, epochs=1, verbose=2, validation_data=(x, y)
    ).history
    assert "kl: " in capsys.readouterr().out
    assert "val_kl" not in history
    # `evaluate` reports its loss as before: a number, not a list.
    result = model.evaluate(x, y, verbose=0)
    assert isinstance(result, float)


def test_nested_model_reports_one_kl():
    inner = keras.Sequential(
        [
            keras.Input((4,)),
            kb.layers.DenseFlipout(4, kl_weight=1.0 / NUM),
            kb.layers.DenseFlipout(2, kl_weight=1.0 / NUM),
        ]
    )
    outer = keras.Sequential([keras.Input((4,)), inner])
    outer.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x = np.random.default_rng(3).normal(size=(NUM, 4)).astype("float32")
    history = outer.fit(
        x, np.zeros((NUM, 2), "float32"), batch_size=16, verbose=0
    ).history
    np.testing.assert_allclose(
        history["kl"], [_numpy_weighted_kl(outer)], rtol=1e-5
    )


def test_stateless_call_of_a_layer_leaves_no_call_context_open():
    # A `stateless_call` runs the layer's `call` without `__call__`, which
    # alone opens and closes Keras' call context: a context left open made
    # every later call add its KL to the earlier ones'.
    layer = kb.layers.DenseFlipout(2)
    x = ops.ones((3, 4), "float32")
    layer.build(x.shape)
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]
    layer.stateless_call(trainable, non_trainable, x, return_losses=True)
    layer(x)
    layer(x)
    assert len(layer.losses) == 1
