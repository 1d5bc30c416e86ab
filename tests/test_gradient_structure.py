"""JAX gradients never differentiate the sample/mean branch.

XLA's CPU backend runs the derivative of a convolution inside `lax.cond`
15 to 80 times slower than outside it, so a gradient through a Bayesian
layer must not contain one, whatever the `training` argument. Checked on
the structure (the jaxpr), not on timings:

- the jaxpr of a jitted gradient, with `training` absent, False or True,
  has no `cond` whose branches hold a convolution or a matrix product;
- a function that is not differentiated (inference) keeps the branch, so
  mean mode still draws nothing there;
- the differentiated pass computes the same loss as the plain forward
  pass with the same random state, in both modes, and mean mode's
  gradient is the matching `keras.layers` layer's.
"""

import keras
import numpy as np
import pytest

import keras_bayes as kb
from tests.backend_marks import only_on

pytestmark = only_on(
    "jax",
    reason="the jaxpr and `lax.cond` are JAX's; TensorFlow and PyTorch "
    "have no such cliff (docs/benchmarks.md, gradient step)",
)

HEAVY = {"conv_general_dilated", "dot_general"}

CASES = [
    pytest.param(
        kb.layers.Conv2DReparameterization,
        {"filters": 3, "kernel_size": 3, "padding": "same"},
        (2, 6, 6, 2),
        id="conv2d_reparameterization",
    ),
    pytest.param(
        kb.layers.Conv2DFlipout,
        {"filters": 3, "kernel_size": 3, "padding": "same"},
        (2, 6, 6, 2),
        id="conv2d_flipout",
    ),
    pytest.param(
        kb.layers.DenseLocalReparameterization,
        {"units": 3},
        (4, 5),
        id="dense_local_reparameterization",
    ),
    pytest.param(
        kb.layers.Conv2DRank1,
        {"filters": 3, "kernel_size": 3, "batch_shape": (2,)},
        (2, 6, 6, 2),
        id="conv2d_rank1",
    ),
    pytest.param(
        kb.layers.DepthwiseConv2DFlipout,
        {"kernel_size": 3},
        (2, 6, 6, 2),
        id="depthwise2d_flipout",
    ),
    pytest.param(
        kb.layers.Conv2DFlipout,
        {
            "filters": 3,
            "kernel_size": 3,
            "kernel_prior": kb.priors.ScaleMixtureNormal(),
        },
        (2, 6, 6, 2),
        id="conv2d_flipout_monte_carlo_kl",
    ),
]


def _primitives(jaxpr):
    """Every primitive name in a jaxpr, sub-jaxprs included."""
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in _sub_jaxprs(eqn):
            names |= _primitives(sub)
    return names


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            inner = getattr(item, "jaxpr", item)
            if hasattr(inner, "eqns"):
                yield inner


def _conds_with_heavy_work(jaxpr):
    found = []
    for eqn in jaxpr.eqns:
        subs = list(_sub_jaxprs(eqn))
        if eqn.primitive.name == "cond":
            inside = set().union(*(_primitives(s) for s in subs))
            if inside & HEAVY:
                found.append(sorted(inside & HEAVY))
        for sub in subs:
            found.extend(_conds_with_heavy_work(sub))
    return found


def _setup(layer_cls, kwargs, shape, mode):
    layer = layer_cls(posterior_value=mode, seed=1, **kwargs)
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    layer.build(shape)
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]
    return layer, x, trainable, non_trainable


def _loss_fn(layer, training):
    kwargs = {} if training == "absent" else {"training": training}

    def loss(trainable, non_trainable, x):
        outputs, _, losses = layer.stateless_call(
            trainable, non_trainable, x, return_losses=True, **kwargs
        )
        return (outputs**2).mean() + sum(losses)

    return loss


@pytest.mark.parametrize(
    "layer_cls, kwargs, shape, training",
    # Every layer kind with `training` absent (the case that fell into the
    # branch); the two convolution estimators with it False and True too.
    [pytest.param(*case.values, "absent", id=case.id) for case in CASES]
    + [
        pytest.param(*case.values, training, id=f"{case.id}-{training}")
        for case in CASES[:2]
        for training in (False, True)
    ],
)
@pytest.mark.parametrize("mode", ["sample", "mean"])
def test_gradient_has_no_branch_around_the_map(
    layer_cls, kwargs, shape, training, mode
):
    import jax

    layer, x, trainable, non_trainable = _setup(layer_cls, kwargs, shape, mode)
    grad = jax.jit(jax.grad(_loss_fn(layer, training)))
    jaxpr = jax.make_jaxpr(grad)(trainable, non_trainable, x).jaxpr
    assert _primitives(jaxpr) & HEAVY  # the maps are there
    assert _conds_with_heavy_work(jaxpr) == []


@pytest.mark.parametrize("layer_cls, kwargs, shape", CASES[:2])
def test_inference_keeps_the_branch(layer_cls, kwargs, shape):
    # Not differentiated: the map runs inside the branch, so a compiled
    # `predict` in mean mode runs the mean map alone and draws nothing.
    import jax

    layer, x, trainable, non_trainable = _setup(
        layer_cls, kwargs, shape, "mean"
    )

    def forward(trainable, non_trainable, x):
        return layer.stateless_call(trainable, non_trainable, x)[0]

    jaxpr = jax.make_jaxpr(jax.jit(forward))(trainable, non_trainable, x)
    assert _conds_with_heavy_work(jaxpr.jaxpr) != []


@pytest.mark.parametrize(
    "layer_cls, kwargs, shape",
    # An estimator with one kernel draw, one with per-example signs, the
    # per-example factors of rank-1, and a Monte Carlo KL.
    [CASES[0], CASES[1], CASES[3], CASES[5]],
)
@pytest.mark.parametrize("mode", ["sample", "mean"])
def test_differentiated_pass_computes_the_same_loss(
    layer_cls, kwargs, shape, mode
):
    import jax

    layer, x, trainable, non_trainable = _setup(layer_cls, kwargs, shape, mode)
    loss = jax.jit(_loss_fn(layer, "absent"))
    value, _ = jax.jit(jax.value_and_grad(_loss_fn(layer, "absent")))(
        trainable, non_trainable, x
    )
    # Same random state (the non-trainable variables hold the seed): the
    # undifferentiated pass takes the branch, the differentiated one the
    # branch-free form, and both draw the same numbers.
    np.testing.assert_allclose(
        float(value), float(loss(trainable, non_trainable, x)), rtol=1e-5
    )


def test_mean_mode_gradient_is_the_plain_layers():
    import jax

    layer, x, trainable, non_trainable = _setup(
        kb.layers.Conv2DFlipout,
        {"filters": 3, "kernel_size": 3, "padding": "same", "kl_weight": 0},
        (2, 6, 6, 2),
        "mean",
    )
    plain = keras.layers.Conv2D(3, 3, padding="same")
    plain.build((2, 6, 6, 2))
    plain.set_weights(
        [np.asarray(layer.kernel_loc.value), np.asarray(layer.bias_loc.value)]
    )

    def plain_loss(kernel, bias, x):
        outputs, _ = plain.stateless_call([kernel, bias], [], x)
        return (outputs**2).mean()

    expected = jax.grad(plain_loss, argnums=(0, 1, 2))(
        plain.kernel.value, plain.bias.value, x
    )
    names = [v.path.rsplit("/", 1)[-1] for v in layer.trainable_variables]
    grads, x_grad = jax.grad(_loss_fn(layer, "absent"), argnums=(0, 2))(
        trainable, non_trainable, x
    )
    grads = dict(zip(names, grads))
    np.testing.assert_allclose(grads["kernel_loc"], expected[0], rtol=1e-5)
    np.testing.assert_allclose(grads["bias_loc"], expected[1], rtol=1e-5)
    np.testing.assert_allclose(x_grad, expected[2], rtol=1e-5, atol=1e-7)
    # The scale gets no gradient from the data loss in mean mode.
    np.testing.assert_array_equal(grads["kernel_untransformed_scale"], 0.0)
