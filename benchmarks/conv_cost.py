"""What one convolution costs inside a training step, per backend.

Flipout runs a second convolution with its own kernel: the forward pass and
the kernel gradient of the perturbation come on top of the plain layer's.
This script measures, for the layer-cost workload of `benchmarks/run.py`
(N=32 examples of 32x32x16, 3x3 kernel to 32 filters, padding "same"):

- the forward convolution, `keras.ops.conv` (compiled as in `fit`: XLA on
  JAX, a `tf.function` on TensorFlow, eager on PyTorch);
- the kernel gradient of that convolution (the backward pass of a layer
  whose input needs no gradient, which is what a first layer does);
- the plain `keras.layers.Conv2D` training step (`train_on_batch`).

From these it prints the floor of Flipout's training-step ratio if the
second convolution cost exactly what the first one does and nothing else
were added: `(step + forward + kernel gradient) / step`. Medians of
`--repeats`, run in alternating blocks (`harness.time_steps` with a block
of a quarter of the repeats).

Usage:
    python benchmarks/conv_cost.py                  # every backend
    python benchmarks/conv_cost.py --backends jax --json conv_cost.json
"""

import sys

import harness
import workloads


def _compiled(forward):
    """`(forward(x, k), kernel_gradient(x, k, upstream))` runnable steps."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def gradient(x, k, upstream):
            return jax.vjp(lambda kernel: forward(x, kernel), k)[1](upstream)

        fwd, grad = jax.jit(forward), jax.jit(gradient)
        return (
            lambda *a: jax.block_until_ready(fwd(*a)),
            lambda *a: jax.block_until_ready(grad(*a)),
        )
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def grad(x, k, upstream):
            with tf.GradientTape() as tape:
                tape.watch(k)
                y = forward(x, k)
            return tape.gradient(y, k, output_gradients=upstream)

        fwd = tf.function(forward)
        # Fetching one element forces the computation without copying the
        # whole result to numpy.
        return (
            lambda *a: fwd(*a)[0, 0, 0, 0].numpy(),
            lambda *a: grad(*a)[0, 0, 0, 0].numpy(),
        )
    import torch

    def run_forward(x, k):
        with torch.no_grad():
            return forward(x, k)

    def run_gradient(x, k, upstream):
        kernel = k.detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(forward(x, kernel), kernel, upstream)
        return gradient

    return run_forward, run_gradient


def measure(repeats=40, warmup=5, quick=False):
    """Median ms of the three steps, and the Flipout floor they imply.

    Args:
        repeats: timed calls of each step.
        warmup: untimed calls of each step first.
        quick: the tiny sizes of `workloads.spec(..., quick=True)`.

    Returns:
        A dict: `forward`, `kernel_gradient`, `conv2d_step` (ms, medians),
        `flipout_floor`, and `timings` (`Timing.as_dict()` of each step).
    """
    import keras
    import numpy as np
    from keras import ops

    workload = workloads.spec("Conv2DFlipout", quick)
    x_np = workloads.example_batch(workload)
    channels, filters = workload["channels"], workload["filters"]
    rng = np.random.default_rng(1)
    k_np = rng.normal(size=(3, 3, channels, filters)).astype("float32")
    out_shape = x_np.shape[:-1] + (filters,)
    out_np = rng.normal(size=out_shape).astype("float32")
    x, k, upstream = (ops.convert_to_tensor(a) for a in (x_np, k_np, out_np))

    def forward(inputs, kernel):
        return ops.conv(inputs, kernel, padding="same")

    run_forward, run_gradient = _compiled(forward)
    layer = keras.layers.Conv2D(filters, **workloads.CONV_OPTIONS)
    model = workloads.compiled_model(layer, x_np.shape[1:])
    target = np.zeros(out_shape, "float32")

    # Blocks of consecutive repeats, the blocks alternating: on PyTorch,
    # alternating single calls of the bare operations with Keras' step
    # made that step three times slower than when it runs on its own.
    timings = harness.time_steps(
        {
            "forward": lambda: run_forward(x, k),
            "kernel_gradient": lambda: run_gradient(x, k, upstream),
            "conv2d_step": lambda: model.train_on_batch(x_np, target),
        },
        repeats,
        warmup,
        block=max(1, repeats // 4),
    )
    result = {name: 1e3 * t.median for name, t in timings.items()}
    conv = result["forward"] + result["kernel_gradient"]
    result["flipout_floor"] = (result["conv2d_step"] + conv) / result[
        "conv2d_step"
    ]
    result["timings"] = {name: t.as_dict() for name, t in timings.items()}
    return result


def report(results, args):
    rows = [
        [
            backend,
            harness.fmt_ms(r["timings"]["forward"], spread=True),
            harness.fmt_ms(r["timings"]["kernel_gradient"], spread=True),
            harness.fmt_ms(r["timings"]["conv2d_step"], spread=True),
            harness.fmt_ratio(r["flipout_floor"]),
        ]
        for backend, r in results.items()
    ]
    header = [
        "backend",
        "forward conv ms",
        "kernel gradient ms",
        "Conv2D training step ms",
        "Flipout floor",
    ]
    return "Medians (quartiles):\n" + harness.table(header, rows)


def main(argv=None):
    args = harness.parse(harness.parser(__doc__, repeats=40, warmup=5), argv)
    return harness.main(
        __file__,
        args,
        lambda a: measure(a.repeats, a.warmup, a.quick),
        report,
    )


if __name__ == "__main__":
    sys.exit(main())
