"""`kb.callbacks.KLWeightScheduler`: KL annealing during `fit`."""

import re

import keras
import numpy as np
import pytest

import keras_bayes as kb
from tests.helpers import layer_kl


def _frozen_model(kl_weight):
    """A model whose loss is its KL alone: zero targets, mean mode, lr 0."""
    model = keras.Sequential(
        [
            keras.Input((5,)),
            kb.layers.DenseFlipout(
                3, kl_weight=kl_weight, posterior_value="mean", use_bias=False
            ),
        ]
    )
    layer = model.layers[0]
    layer.kernel_loc.assign(np.zeros((5, 3), "float32"))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    return model, layer


def _fit_zeros(model, scheduler):
    """One epoch on two all-zero examples, with the scheduler."""
    inputs, outputs = model.input_shape[1:], model.output_shape[1:]
    model.fit(
        np.zeros((2, *inputs)),
        np.zeros((2, *outputs)),
        verbose=0,
        callbacks=[scheduler],
    )


class TestKLWeightScheduler:
    def test_reported_loss_follows_the_schedule(self):
        base = 0.01
        model, layer = _frozen_model(base)
        x = np.zeros((4, 5), "float32")
        y = np.zeros((4, 3), "float32")
        # Compile the train step first: the scheduler must not need a new one.
        model.fit(x, y, epochs=1, verbose=0)
        train_function = model.train_function
        kl = layer_kl(layer)
        factors = [0.0, 0.25, 1.0]
        scheduler = kb.callbacks.KLWeightScheduler(factors)
        history = model.fit(x, y, epochs=4, verbose=0, callbacks=[scheduler])
        assert model.train_function is train_function
        expected = [f * base * kl for f in factors + [1.0]]
        np.testing.assert_allclose(history.history["loss"], expected, rtol=1e-5)
        assert history.history["kl_factor"] == factors + [1.0]
        assert layer.kl_weight == pytest.approx(base)

    def test_function_schedule_and_base_kept_across_fits(self):
        model, layer = _frozen_model(0.5)
        x = np.zeros((2, 5), "float32")
        y = np.zeros((2, 3), "float32")
        scheduler = kb.callbacks.KLWeightScheduler(lambda epoch: 0.5**epoch)
        model.fit(x, y, epochs=3, verbose=0, callbacks=[scheduler])
        assert layer.kl_weight == pytest.approx(0.5 * 0.25)
        history = model.fit(x, y, epochs=1, verbose=0, callbacks=[scheduler])
        assert layer.kl_weight == pytest.approx(0.5)
        np.testing.assert_allclose(
            history.history["loss"][0], 0.5 * layer_kl(layer), rtol=1e-5
        )

    @pytest.mark.parametrize(
        "schedule",
        [
            pytest.param([], id="empty"),
            pytest.param("linear", id="linear"),
            pytest.param([1.0, -0.5], id="negative_factor"),
        ],
    )
    def test_bad_schedule(self, schedule):
        with pytest.raises(ValueError, match="argument `schedule`"):
            kb.callbacks.KLWeightScheduler(schedule)

    def test_bad_factor_from_function(self):
        model, _ = _frozen_model(1.0)
        scheduler = kb.callbacks.KLWeightScheduler(lambda epoch: float("nan"))
        with pytest.raises(
            ValueError, match=re.escape("Received: schedule=nan")
        ):
            _fit_zeros(model, scheduler)

    def test_model_without_bayesian_layers(self):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        scheduler = kb.callbacks.KLWeightScheduler([1.0])
        with pytest.raises(ValueError, match="no Bayesian layer"):
            _fit_zeros(model, scheduler)

    def test_config_round_trip(self):
        scheduler = kb.callbacks.KLWeightScheduler([0.1, 1.0], verbose=1)
        revived = kb.callbacks.KLWeightScheduler.from_config(
            scheduler.get_config()
        )
        assert revived.schedule == [0.1, 1.0]
        assert revived.verbose == 1
