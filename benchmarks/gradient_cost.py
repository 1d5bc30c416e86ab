"""A gradient step through a Bayesian layer, with `training` absent, False
and True, against the plain Keras layer, per backend.

Users take gradients without `training=True` all the time: custom loops
that call `stateless_call` without the flag, input attributions and
adversarial examples, per-example gradients for a Fisher or a Laplace fit.
This script times, for each layer kind, one step that computes the loss
(mean of the squared outputs plus the layer's KL loss) and its gradient
with respect to every trainable variable and the input:

- JAX: `jax.jit(jax.value_and_grad(...))` over `layer.stateless_call`;
- TensorFlow: a `tf.function` with a `GradientTape`;
- PyTorch: eager `backward()`.

Candidates: the Bayesian layer in sample mode with `training` absent,
False and True, and in mean mode with `training` absent; the reference is
the matching `keras.layers` layer (same step, same sizes), the repeats of
all of them interleaved (`harness.time_steps`). Sizes: the layer-cost
workload (`workloads.py`): 32 examples of 32x32x16 into 3x3 convolutions
with 32 filters, padding "same"; dense: 32 x 1024 into 512 units.

Targets (issue: JAX gradient cliff): on JAX, the step with `training`
absent within 10% of the step with `training=True`; Flipout at most 1.9x
and reparameterization at most 1.10x the plain `Conv2D` step.

Usage:
    python benchmarks/gradient_cost.py                 # every backend
    python benchmarks/gradient_cost.py --backends jax --kinds flipout
    python benchmarks/gradient_cost.py --quick         # a smoke run
"""

import sys

import harness

KINDS = {
    # name: (Bayesian class, its arguments, reference class, its arguments,
    #        family)
    "reparameterization": (
        "Conv2DReparameterization",
        {"filters": 32, "kernel_size": 3, "padding": "same"},
        "Conv2D",
        {"filters": 32, "kernel_size": 3, "padding": "same"},
        "conv",
    ),
    "flipout": (
        "Conv2DFlipout",
        {"filters": 32, "kernel_size": 3, "padding": "same"},
        "Conv2D",
        {"filters": 32, "kernel_size": 3, "padding": "same"},
        "conv",
    ),
    "local_reparameterization": (
        "DenseLocalReparameterization",
        {"units": 512},
        "Dense",
        {"units": 512},
        "dense",
    ),
    "rank1": (
        "Conv2DRank1",
        {"filters": 32, "kernel_size": 3, "padding": "same"},
        "Conv2D",
        {"filters": 32, "kernel_size": 3, "padding": "same"},
        "conv",
    ),
    "depthwise_flipout": (
        "DepthwiseConv2DFlipout",
        {"kernel_size": 3, "padding": "same"},
        "DepthwiseConv2D",
        {"kernel_size": 3, "padding": "same"},
        "conv",
    ),
}

CANDIDATES = ("absent", "false", "true", "mean")


def parse_args(argv=None):
    parser = harness.parser(__doc__, repeats=30, warmup=3, kinds=KINDS)
    args = harness.parse(parser, argv)
    args.kinds = args.kinds or list(KINDS)
    return args


def _inputs(family, quick):
    import numpy as np

    rng = np.random.default_rng(0)
    if family == "dense":
        shape = (2, 8) if quick else (32, 1024)
    else:
        shape = (2, 6, 6, 2) if quick else (32, 32, 32, 16)
    return rng.normal(size=shape).astype("float32")


def _quick_kwargs(kwargs, quick):
    if not quick:
        return kwargs
    kwargs = dict(kwargs)
    for key in ("filters", "units"):
        if key in kwargs:
            kwargs[key] = 4
    return kwargs


def _step(layer, x, training):
    """A zero-argument callable: loss and gradient of one step, finished
    when it returns."""
    import keras

    kwargs = {} if training is None else {"training": training}
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def loss(trainable, non_trainable, x):
            outputs, _, losses = layer.stateless_call(
                trainable, non_trainable, x, return_losses=True, **kwargs
            )
            return (outputs**2).mean() + sum(losses)

        step = jax.jit(jax.value_and_grad(loss, argnums=(0, 2)))
        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]
        x = jax.numpy.asarray(x)
        return lambda: jax.block_until_ready(step(trainable, non_trainable, x))
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                tape.watch(x)
                outputs = layer(x, **kwargs)
                value = tf.reduce_mean(outputs**2) + tf.add_n(
                    [tf.zeros(())] + list(layer.losses)
                )
            return value, tape.gradient(value, layer.trainable_variables + [x])

        return lambda: [t.numpy() for t in tf.nest.flatten(step())]
    import torch

    # On the layer's device (Keras places tensors on the GPU when there is
    # one).
    x = keras.ops.convert_to_tensor(x).detach().requires_grad_(True)

    def step():
        layer.zero_grad()
        x.grad = None
        outputs = layer(x, **kwargs)
        value = (outputs**2).mean() + sum(layer.losses, torch.zeros(()))
        value.backward()
        return float(value)

    return step


def work(args):
    import keras

    import keras_bayes as kb

    results = {}
    for kind in args.kinds:
        bayes_name, bayes_kwargs, plain_name, plain_kwargs, family = KINDS[kind]
        x = _inputs(family, args.quick)
        bayes_kwargs = _quick_kwargs(bayes_kwargs, args.quick)
        plain_kwargs = _quick_kwargs(plain_kwargs, args.quick)
        plain = getattr(keras.layers, plain_name)(**plain_kwargs)
        plain.build(x.shape)
        steps = {"plain": _step(plain, x, None)}
        for candidate in CANDIDATES:
            layer = getattr(kb.layers, bayes_name)(
                posterior_value="mean" if candidate == "mean" else "sample",
                **bayes_kwargs,
            )
            layer.build(x.shape)
            training = {"absent": None, "false": False, "true": True}.get(
                candidate
            )
            steps[candidate] = _step(layer, x, training)
        timings = harness.time_steps(steps, args.repeats, warmup=args.warmup)
        results[kind] = {
            "plain_ms": timings["plain"].as_dict(),
            **{
                candidate: harness.compare(timings[candidate], timings["plain"])
                for candidate in CANDIDATES
            },
        }
    return results


def report(results, args):
    rows = []
    for backend, kinds in results.items():
        for kind, result in kinds.items():
            rows.append(
                [
                    backend,
                    kind,
                    harness.fmt_ms(result["plain_ms"]),
                    *(
                        harness.fmt_comparison(result[candidate])
                        for candidate in CANDIDATES
                    ),
                ]
            )
    return harness.table(
        [
            "backend",
            "layer",
            "plain step ms",
            "training absent",
            "training=False",
            "training=True",
            "mean mode",
        ],
        rows,
    )


if __name__ == "__main__":
    ARGS = parse_args()
    sys.exit(harness.main(__file__, ARGS, work, report))
