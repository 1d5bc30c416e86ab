"""Mean mode draws nothing and runs only the mean map.

- no `keras.random` call in mean mode, for every layer kind and estimator
  (with a closed-form KL); sample mode does draw (the check can fail);
- Flipout's second map application runs only in sample mode;
- the mean-mode KL, reused between calls with unchanged weights, follows
  every change of the weights and of `kl_weight`, and keeps its gradient
  where one is recorded;
- a model compiled in sample mode serves the posterior mean after the
  switch.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_bayes as kb
from tests.backend_marks import only_on

CASES = [
    pytest.param(
        kb.layers.Conv2DFlipout,
        {"filters": 3, "kernel_size": 2},
        (2, 5, 5, 2),
        id="conv2d_flipout",
    ),
    pytest.param(
        kb.layers.Conv1DReparameterization,
        {"filters": 3, "kernel_size": 2},
        (2, 6, 2),
        id="conv1d_reparameterization",
    ),
    pytest.param(
        kb.layers.Conv2DTransposeFlipout,
        {"filters": 3, "kernel_size": 2, "strides": 2},
        (2, 3, 3, 2),
        id="conv2d_transpose_flipout",
    ),
    pytest.param(
        kb.layers.DenseLocalReparameterization,
        {"units": 3},
        (4, 5),
        id="dense_local_reparameterization",
    ),
    pytest.param(
        kb.layers.DenseFlipout,
        {"units": 3, "batch_shape": (2,)},
        (4, 5),
        id="dense_flipout_members",
    ),
    pytest.param(
        kb.layers.DepthwiseConv2DFlipout,
        {"kernel_size": 2, "depth_multiplier": 2},
        (2, 5, 5, 2),
        id="depthwise2d_flipout",
    ),
    pytest.param(
        kb.layers.SeparableConv1DFlipout,
        {"filters": 3, "kernel_size": 2},
        (2, 6, 2),
        id="separable1d_flipout",
    ),
    pytest.param(
        kb.layers.Conv2DRank1,
        {"filters": 3, "kernel_size": 2, "batch_shape": (2,)},
        (2, 5, 5, 2),
        id="conv2d_rank1",
    ),
    pytest.param(
        kb.layers.DenseFlipout,
        {
            "units": 3,
            "bias_posterior": "mean_field_normal",
            "bias_prior": "normal",
        },
        (4, 5),
        id="dense_flipout_stochastic_bias",
    ),
]


def _inputs(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


class _NoDraws:
    """Replaces the `keras.random` functions with ones that fail."""

    NAMES = ("normal", "uniform", "randint")

    def __init__(self, monkeypatch):
        self.calls = []
        for name in self.NAMES:
            monkeypatch.setattr(keras.random, name, self._refuse(name))

    def _refuse(self, name):
        def refuse(*args, **kwargs):
            self.calls.append(name)
            raise AssertionError(f"keras.random.{name} was called")

        return refuse


@pytest.mark.parametrize("layer_cls, kwargs, shape", CASES)
def test_mean_mode_draws_nothing(layer_cls, kwargs, shape, monkeypatch):
    layer = layer_cls(**kwargs)
    x = _inputs(shape)
    layer(x)  # built, in sample mode
    layer.posterior_value = "mean"
    expected = ops.convert_to_numpy(layer(x))
    guard = _NoDraws(monkeypatch)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x)), expected)
    assert guard.calls == []
    # The guard does catch the draws of sample mode.
    layer.posterior_value = "sample"
    with pytest.raises(AssertionError, match="keras.random"):
        layer(x)


@pytest.mark.parametrize(
    "layer_cls, kwargs, shape",
    [case for case in CASES if "flipout" in case.id and "rank1" not in case.id],
)
def test_flipout_second_map_runs_only_in_sample_mode(layer_cls, kwargs, shape):
    layer = layer_cls(**kwargs)
    x = _inputs(shape)
    layer(x)
    maps = [layer._map] + [
        m for m in [getattr(layer, "_pointwise_map", None)] if m is not None
    ]
    counts = []
    for linear_map in maps:
        original = linear_map._apply

        def counted(inputs, kernel, original=original):
            counts.append(1)
            return original(inputs, kernel)

        linear_map._apply = counted
    layer.posterior_value = "mean"
    layer(x)
    mean_calls = len(counts)
    layer.posterior_value = "sample"
    layer(x)
    sample_calls = len(counts) - mean_calls
    # One application per map in mean mode (per member for members on
    # inputs that carry them; here inputs are shared), two in sample mode.
    assert sample_calls == 2 * mean_calls, (mean_calls, sample_calls)


def _numpy_kl(layer):
    total = 0.0
    for weight in layer.posterior_weights:
        if weight.prior is None:
            continue
        loc = ops.convert_to_numpy(weight.variables["loc"]).astype("float64")
        u = ops.convert_to_numpy(weight.variables["untransformed_scale"])
        scale = np.logaddexp(0.0, u.astype("float64")) + 1e-5
        m0, s0 = weight.prior.loc, weight.prior.scale
        total += np.sum(
            np.log(s0 / scale)
            + (scale**2 + (loc - m0) ** 2) / (2 * s0**2)
            - 0.5
        )
    return total


def test_mean_mode_kl_follows_the_weights():
    layer = kb.layers.DenseFlipout(3, posterior_value="mean", kl_weight=0.5)
    x = _inputs((4, 5))
    layer(x)
    first = float(ops.convert_to_numpy(layer.losses[0]))
    np.testing.assert_allclose(first, 0.5 * _numpy_kl(layer), rtol=1e-5)
    layer(x)
    assert float(ops.convert_to_numpy(layer.losses[0])) == first
    # A new kernel location, a new scale, a new weight: each is seen.
    layer.kernel_loc.assign(ops.convert_to_numpy(layer.kernel_loc) + 1.0)
    layer(x)
    second = float(ops.convert_to_numpy(layer.losses[0]))
    np.testing.assert_allclose(second, 0.5 * _numpy_kl(layer), rtol=1e-5)
    assert second > first
    layer.kernel_untransformed_scale.assign(
        np.full((5, 3), -1.0, dtype="float32")
    )
    layer(x)
    np.testing.assert_allclose(
        float(ops.convert_to_numpy(layer.losses[0])),
        0.5 * _numpy_kl(layer),
        rtol=1e-5,
    )
    layer.kl_weight = 2.0
    layer(x)
    np.testing.assert_allclose(
        float(ops.convert_to_numpy(layer.losses[0])),
        2.0 * _numpy_kl(layer),
        rtol=1e-5,
    )


@only_on(
    "torch",
    reason="PyTorch records gradients eagerly; the KL reused "
    "in mean mode must not lose them",
)
def test_mean_mode_kl_keeps_its_gradient_on_torch():
    import torch

    layer = kb.layers.DenseFlipout(3, posterior_value="mean")
    x = _inputs((4, 5))
    with torch.no_grad():
        layer(x)  # a KL computed without gradient, reusable in no_grad
    layer(x)
    (kl,) = layer.losses
    assert kl.requires_grad
    kl.backward()
    grad = layer.kernel_loc.value.grad
    # d KL / d loc = loc / prior_scale**2 for the N(0, 1) prior.
    np.testing.assert_allclose(
        grad.numpy(), ops.convert_to_numpy(layer.kernel_loc), rtol=1e-5
    )


def test_switch_to_mean_after_compile_serves_the_keras_layer():
    x = _inputs((6, 5))
    model = keras.Sequential([keras.Input((5,)), kb.layers.DenseFlipout(3)])
    model.predict_on_batch(x)  # compiled in sample mode
    layer = model.layers[0]
    reference = keras.layers.Dense(3)
    reference.build((None, 5))
    reference.set_weights(
        [
            ops.convert_to_numpy(layer.kernel_loc),
            ops.convert_to_numpy(layer.bias_loc),
        ]
    )
    kb.set_posterior_value(model, "mean")
    np.testing.assert_allclose(
        model.predict_on_batch(x),
        ops.convert_to_numpy(reference(x)),
        rtol=1e-5,
        atol=1e-6,
    )
    kb.set_posterior_value(model, "sample")
    assert not np.allclose(
        model.predict_on_batch(x), ops.convert_to_numpy(reference(x)), atol=1e-4
    )
