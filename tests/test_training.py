"""Training workflows: `fit`, `evaluate` and `predict` with Bayesian layers.

The KL terms reach the training loss with no user code, switches
(`kl_weight`, `posterior_value`) take effect in already-compiled functions,
and compiled functions (XLA on TensorFlow, `jax.jit`) draw new noise on
every step. A training loop of the backend's own (torch) reaches the KL
through `model.losses`.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_bayes as kb
from tests.backend_marks import only_on, skip_on
from tests.helpers import layer_kl, to_numpy
from tests.references import softmax_cross_entropy


def _data(x_shape, y_shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=x_shape).astype("float32")
    y = rng.normal(size=y_shape).astype("float32")
    return x, y


def _bayesian(model):
    return kb.workflows.bayesian_layers(model)


# -- the TensorFlow Probability example ------------------------------------


def test_tfp_docstring_example():
    # The example of `tfp.layers.Convolution2DReparameterization`, with our
    # classes in place of TFP's and nothing else changed.
    model = keras.Sequential(
        [
            keras.layers.Reshape([32, 32, 3]),
            kb.layers.Convolution2DReparameterization(
                64, kernel_size=5, padding="SAME", activation="relu"
            ),
            keras.layers.MaxPooling2D(2, 2, "same"),
            keras.layers.Flatten(),
            kb.layers.DenseReparameterization(10),
        ]
    )
    # Few examples: 64 filters of 5x5 on 32x32 inputs is not a tiny model.
    rng = np.random.default_rng(0)
    features = rng.normal(size=(4, 32 * 32 * 3)).astype("float32")
    labels = rng.integers(0, 10, size=4)

    logits = model(features)
    assert tuple(logits.shape) == (4, 10)
    conv, dense = _bayesian(model)
    assert conv.kernel_loc.shape == (5, 5, 3, 64)
    assert dense.kernel_loc.shape == (16 * 16 * 64, 10)

    kl = sum(model.losses)
    assert len(model.losses) == 2
    assert tuple(ops.shape(kl)) == ()
    np.testing.assert_allclose(
        to_numpy(kl),
        to_numpy(conv.losses[0]) + to_numpy(dense.losses[0]),
        rtol=1e-6,
    )
    # Against the closed form computed here: float32 sums over ~170k terms
    # agree with the float64 reference to about 1e-5 relative.
    np.testing.assert_allclose(
        to_numpy(kl), layer_kl(conv) + layer_kl(dense), rtol=1e-4
    )

    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    # The per-example ELBO weighs the KL by 1 / num_examples; a small weight
    # also keeps the KL (~4e5 at weight 1) from hiding the data loss.
    for layer in (conv, dense):
        layer.kl_weight = 1e-5

    # In mean mode the loss `fit` reports for its single batch is the loss
    # before the update: cross-entropy plus the weighted KL, both computed
    # here from the model's weights and mean outputs.
    kb.set_posterior_value(model, "mean")
    expected = softmax_cross_entropy(
        to_numpy(model(features)), labels
    ) + 1e-5 * (layer_kl(conv) + layer_kl(dense))
    before = [to_numpy(v) for v in model.trainable_weights]
    history = model.fit(features, labels, batch_size=4, epochs=1, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], expected, rtol=1e-5)
    after = [to_numpy(v) for v in model.trainable_weights]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))

    # And it trains in sample mode, as written in the example.
    kb.set_posterior_value(model, "sample")
    history = model.fit(features, labels, batch_size=2, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


# -- compiled training -----------------------------------------------------


class _BatchLosses(keras.callbacks.Callback):
    """The running loss `fit` reports after each batch."""

    def on_train_begin(self, logs=None):
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def _batch_losses(model, x, y):
    """The running losses `fit` reports over `x` in batches of 2, in order."""
    record = _BatchLosses()
    model.fit(x, y, batch_size=2, shuffle=False, verbose=0, callbacks=[record])
    return record.losses


def _conv_dense_model(estimator):
    conv = getattr(kb.layers, f"Conv2D{estimator}")
    dense = getattr(kb.layers, f"Dense{estimator}")
    return keras.Sequential(
        [
            keras.Input((5, 5, 2)),
            conv(3, 3, activation="relu"),
            keras.layers.Flatten(),
            dense(2, kl_weight=1e-3),
        ]
    )


@skip_on(
    "torch",
    reason="XLA-compiled training is promised on TensorFlow and JAX; on "
    "torch jit_compile=True means torch.compile",
)
@pytest.mark.parametrize("estimator", ["Reparameterization", "Flipout"])
def test_jit_compiled_fit_draws_new_noise_every_step(estimator):
    x, y = _data((4, 5, 5, 2), (4, 2))
    model = _conv_dense_model(estimator)
    model.compile(
        optimizer=keras.optimizers.SGD(0.05), loss="mse", jit_compile=True
    )
    assert model.jit_compile

    before = [to_numpy(v) for v in model.trainable_weights]
    history = model.fit(x, y, batch_size=2, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    after = [to_numpy(v) for v in model.trainable_weights]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))

    # With a zero learning rate the weights stay put, so two steps on the
    # same batch differ only by the noise drawn inside the compiled step:
    # the running mean after step 2 differs from step 1's loss. In mean mode
    # (the control) they are equal.
    model.optimizer.learning_rate = 0.0
    same_batches = np.concatenate([x[:2], x[:2]]), np.concatenate([y[:2]] * 2)
    first, running = _batch_losses(model, *same_batches)
    assert not np.isclose(first, running, rtol=1e-6, atol=0)
    kb.set_posterior_value(model, "mean")
    first, running = _batch_losses(model, *same_batches)
    np.testing.assert_allclose(running, first, rtol=1e-6)
    kb.set_posterior_value(model, "sample")

    # Compiled inference draws on every call too.
    a = model.predict(x, verbose=0)
    b = model.predict(x, verbose=0)
    assert not np.allclose(a, b)
    loss_a = model.evaluate(x, y, verbose=0)
    loss_b = model.evaluate(x, y, verbose=0)
    assert loss_a != loss_b


# -- switching the posterior value after compilation -----------------------


def _assert_switches(model, x, y, expected_layers):
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)

    a = model.predict(x, verbose=0)
    b = model.predict(x, verbose=0)
    assert not np.allclose(a, b), "sample mode repeats its draws"

    compiled = model.predict_function
    assert kb.set_posterior_value(model, "mean") == expected_layers
    a = model.predict(x, verbose=0)
    b = model.predict(x, verbose=0)
    assert model.predict_function is compiled, "predict was recompiled"
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, to_numpy(model(x)), rtol=1e-5, atol=1e-6)
    # The mean-mode training loss is deterministic as well.
    assert model.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)

    assert kb.set_posterior_value(model, "sample") == expected_layers
    a = model.predict(x, verbose=0)
    b = model.predict(x, verbose=0)
    assert not np.allclose(a, b), "the switch back to sample had no effect"


def test_set_posterior_value_after_compile():
    x, y = _data((4, 5, 5, 2), (4, 2))
    _assert_switches(_conv_dense_model("Flipout"), x, y, expected_layers=2)


def test_set_posterior_value_reaches_nested_models():
    x, y = _data((4, 6, 2), (4, 3))
    inner = keras.Sequential(
        [
            keras.Input((6, 2)),
            kb.layers.Conv1DReparameterization(3, 3),
            keras.layers.Flatten(),
        ],
        name="inner",
    )
    inputs = keras.Input((6, 2))
    features = inner(inputs)
    outputs = kb.layers.DenseLocalReparameterization(3)(features)
    model = keras.Model(inputs, outputs)
    _assert_switches(model, x, y, expected_layers=2)
    # The control: with only the outer layer in mean mode, the nested
    # layer's draws still reach the outputs, so the identical predictions
    # above needed the switch to reach inside the sub-model.
    kb.set_posterior_value(model.layers[-1], "mean")
    assert inner.layers[0].posterior_value == "sample"
    a = model.predict(x, verbose=0)
    b = model.predict(x, verbose=0)
    assert not np.allclose(a, b)


# -- losses of a functional model ------------------------------------------


def _two_branch_model():
    inputs = keras.Input((6, 6, 2))
    left = kb.layers.Conv2DReparameterization(
        3, 3, kl_weight=0.01, name="left"
    )(inputs)
    right = kb.layers.Conv2DFlipout(
        2,
        2,
        strides=2,
        kernel_prior=kb.priors.Normal(0.5, 2.0),
        bias_posterior="mean_field_normal",
        bias_prior=kb.priors.Normal(-0.2, 0.5),
        kl_weight=0.02,
        name="right",
    )(inputs)
    merged = keras.layers.Concatenate()(
        [
            keras.layers.GlobalAveragePooling2D()(left),
            keras.layers.GlobalAveragePooling2D()(right),
        ]
    )
    outputs = kb.layers.DenseFlipout(2, kl_weight=0.005, name="head")(merged)
    return keras.Model(inputs, outputs)


def test_functional_losses_and_kl_weight_after_compile():
    x, y = _data((4, 6, 6, 2), (4, 2))
    model = _two_branch_model()
    layers = {layer.name: layer for layer in _bayesian(model)}
    assert sorted(layers) == ["head", "left", "right"]

    model(x)
    # One scalar KL per Bayesian layer, each its weighted closed form.
    assert len(model.losses) == 3
    for layer in layers.values():
        (loss,) = layer.losses
        assert tuple(ops.shape(loss)) == ()
        np.testing.assert_allclose(
            to_numpy(loss), layer.kl_weight * layer_kl(layer), rtol=1e-5
        )
    np.testing.assert_allclose(
        sorted(to_numpy(loss) for loss in model.losses),
        sorted(to_numpy(layer.losses[0]) for layer in layers.values()),
    )

    # In mean mode the training loss is the data loss plus the weighted KLs,
    # and `evaluate` (one batch) reports exactly that.
    model.compile(optimizer="sgd", loss="mse")
    kb.set_posterior_value(model, "mean")
    data_loss = np.mean((to_numpy(model(x)).astype("float64") - y) ** 2)
    kl = sum(layer.kl_weight * layer_kl(layer) for layer in layers.values())
    assert kl > 0.1 * data_loss  # both terms matter at this tolerance
    total = model.evaluate(x, y, batch_size=len(x), verbose=0)
    np.testing.assert_allclose(total, data_loss + kl, rtol=1e-5)

    # A KL weight set after compile changes the next `evaluate`, with the
    # compiled function reused.
    compiled = model.test_function
    layers["right"].kl_weight = 0.0
    partial = model.evaluate(x, y, batch_size=len(x), verbose=0)
    assert model.test_function is compiled, "evaluate was recompiled"
    expected = data_loss + kl - 0.02 * layer_kl(layers["right"])
    np.testing.assert_allclose(partial, expected, rtol=1e-5)
    for layer in layers.values():
        layer.kl_weight = 0.0
    data_only = model.evaluate(x, y, batch_size=len(x), verbose=0)
    np.testing.assert_allclose(data_only, data_loss, rtol=1e-5)


# -- a training loop of the backend's own ------------------------------------


@only_on("torch", reason="a hand-written training loop is backend-specific")
def test_torch_training_loop_with_model_losses():
    import torch

    model = keras.Sequential(
        [keras.Input((4,)), kb.layers.DenseFlipout(2, kl_weight=0.1)]
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(8, 4)
    y = torch.zeros(8, 2)
    loc = model.layers[0].kernel_loc
    before = to_numpy(loc).copy()
    for _ in range(3):
        optimizer.zero_grad()
        outputs = model(x)
        kl = sum(model.losses)
        loss = torch.mean((outputs - y) ** 2) + kl
        loss.backward()
        optimizer.step()
    assert not np.allclose(to_numpy(loc), before)
