"""Numerical robustness: extreme posterior parameters and mixed precision."""

import keras
import numpy as np
import pytest

import keras_bayes as kb
from tests.backend_marks import skip_on
from tests.helpers import to_numpy

LAYERS = {
    "conv2d_reparameterization": (
        lambda **kw: kb.layers.Conv2DReparameterization(2, 3, **kw),
        (2, 5, 5, 2),
    ),
    "conv2d_flipout": (
        lambda **kw: kb.layers.Conv2DFlipout(2, 3, padding="same", **kw),
        (2, 5, 5, 2),
    ),
    "conv1d_flipout_causal": (
        lambda **kw: kb.layers.Conv1DFlipout(2, 3, padding="causal", **kw),
        (2, 6, 2),
    ),
    "dense_local_reparameterization": (
        lambda **kw: kb.layers.DenseLocalReparameterization(3, **kw),
        (2, 4),
    ),
    "dense_flipout": (
        lambda **kw: kb.layers.DenseFlipout(3, **kw),
        (2, 4),
    ),
}

PRIORS = {
    "normal": kb.priors.Normal(0.0, 1.0),
    "scale_mixture": kb.priors.ScaleMixtureNormal(0.5, 1.0, 0.0025),
    "spike_and_slab": kb.priors.SpikeAndSlab(),
}


def _one_step(model, x, y):
    """One eager SGD step; a NaN or infinite gradient leaves bad weights."""
    model.compile(
        optimizer=keras.optimizers.SGD(1e-12), loss="mse", run_eagerly=True
    )
    history = model.fit(x, y, epochs=1, batch_size=len(x), verbose=0)
    return history.history["loss"][0]


# (loc, untransformed_scale): huge means with the smallest and largest
# scales, and the scale extremes on their own.
EXTREMES = [
    pytest.param(1e3, -30.0, id="huge_loc_tiny_scale"),
    pytest.param(-1e3, 30.0, id="huge_negative_loc_huge_scale"),
    pytest.param(1e3, 0.0, id="huge_loc"),
    pytest.param(0.0, -30.0, id="tiny_scale"),
    pytest.param(0.0, 30.0, id="huge_scale"),
]


@pytest.mark.parametrize("loc, untransformed_scale", EXTREMES)
@pytest.mark.parametrize("case", sorted(LAYERS))
def test_extreme_parameters_stay_finite(case, loc, untransformed_scale):
    make, input_shape = LAYERS[case]
    x = np.random.default_rng(0).uniform(-1, 1, input_shape).astype("float32")
    for prior_name, prior in PRIORS.items():
        layer = make(
            kernel_prior=prior,
            bias_posterior="mean_field_normal",
            bias_prior=prior,
        )
        model = keras.Sequential([keras.Input(input_shape[1:]), layer])
        for variable in layer.trainable_weights:
            if "untransformed_scale" in variable.name:
                value = untransformed_scale
            else:
                value = loc
            variable.assign(np.full(variable.shape, value, "float32"))
        outputs = to_numpy(model(x))
        assert np.all(np.isfinite(outputs)), prior_name
        kl = to_numpy(layer.losses[0])
        assert np.isfinite(kl), prior_name
        if prior_name == "normal":
            assert kl >= 0
        loss = _one_step(model, x, np.zeros_like(outputs))
        assert np.isfinite(loss), prior_name
        for variable in layer.trainable_weights:
            assert np.all(np.isfinite(to_numpy(variable))), (
                prior_name,
                variable.name,
            )


def test_zero_inputs_keep_local_reparameterization_gradients_finite():
    # All-zero rows give a zero output variance; the square root there must
    # not turn into an infinite gradient.
    layer = kb.layers.DenseLocalReparameterization(3)
    model = keras.Sequential([keras.Input((4,)), layer])
    x = np.zeros((4, 4), "float32")
    loss = _one_step(model, x, np.ones((4, 3), "float32"))
    assert np.isfinite(loss)
    for variable in layer.trainable_weights:
        assert np.all(np.isfinite(to_numpy(variable))), variable.name


def _mixed_precision_model(policy):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            kb.layers.Conv2DFlipout(
                4, 3, padding="same", activation="relu", dtype=policy
            ),
            kb.layers.Conv2DReparameterization(4, 3, dtype=policy),
            keras.layers.Flatten(dtype=policy),
            kb.layers.DenseLocalReparameterization(
                3, kernel_prior=kb.priors.ScaleMixtureNormal(), dtype=policy
            ),
            keras.layers.Activation("softmax", dtype="float32"),
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "policy",
    [
        "mixed_float16",
        pytest.param(
            "mixed_bfloat16",
            marks=skip_on(
                "torch",
                reason="bfloat16 is covered by the layer checks; torch CPU "
                "bfloat16 backward kernels make 50 steps too slow for CI",
            ),
        ),
    ],
)
def test_mixed_precision_trains_fifty_steps_without_nan(policy):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=16)
    model = _mixed_precision_model(policy)
    for layer in kb.workflows.bayesian_layers(model):
        layer.kl_weight = 1.0 / len(x)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
    )
    history = model.fit(x, y, epochs=50, batch_size=16, verbose=0)
    losses = np.array(history.history["loss"])
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    model(x[:2])
    for kl in model.losses:
        assert keras.backend.standardize_dtype(kl.dtype) == "float32"
        assert np.isfinite(to_numpy(kl))
    for variable in model.weights:
        assert variable.dtype == "float32"
        assert np.all(np.isfinite(to_numpy(variable))), variable.name
