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
`--repeats`, run in alternating blocks.

Usage:
    python benchmarks/conv_cost.py                  # every backend
    python benchmarks/conv_cost.py --backends jax
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")
SHAPE = (32, 32, 32, 16)
KERNEL = (3, 3, 16, 32)


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


def measure(repeats=40, warmup=5):
    import keras
    import numpy as np
    from keras import ops

    rng = np.random.default_rng(0)
    x_np = rng.normal(size=SHAPE).astype("float32")
    k_np = rng.normal(size=KERNEL).astype("float32")
    out_np = rng.normal(size=SHAPE[:-1] + KERNEL[-1:]).astype("float32")
    x, k, upstream = (ops.convert_to_tensor(a) for a in (x_np, k_np, out_np))

    def forward(inputs, kernel):
        return ops.conv(inputs, kernel, padding="same")

    run_forward, run_gradient = _compiled(forward)

    inputs = keras.Input(shape=SHAPE[1:])
    model = keras.Model(
        inputs, keras.layers.Conv2D(KERNEL[-1], 3, padding="same")(inputs)
    )
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    target = np.zeros(SHAPE[:-1] + KERNEL[-1:], "float32")

    steps = {
        "forward": lambda: run_forward(x, k),
        "kernel_gradient": lambda: run_gradient(x, k, upstream),
        "conv2d_step": lambda: model.train_on_batch(x_np, target),
    }
    for _ in range(warmup):
        for step in steps.values():
            step()
    # Blocks of consecutive repeats, the blocks alternating: on PyTorch,
    # alternating single calls of the bare operations with Keras' step
    # made that step three times slower than when it runs on its own.
    times = {name: [] for name in steps}
    names = list(steps)
    block = max(1, repeats // 4)
    for i in range(0, repeats, block):
        for name in names if (i // block) % 2 else names[::-1]:
            for _ in range(min(block, repeats - i)):
                start = time.perf_counter()
                steps[name]()
                times[name].append(time.perf_counter() - start)
    result = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    conv = result["forward"] + result["kernel_gradient"]
    result["flipout_floor"] = (result["conv2d_step"] + conv) / result[
        "conv2d_step"
    ]
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS)
    )
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(measure(args.repeats)))
        return
    rows = [
        "| backend | forward conv ms | kernel gradient ms | Conv2D training "
        "step ms | Flipout floor |",
        "|---|---|---|---|---|",
    ]
    for backend in args.backends:
        env = dict(os.environ, KERAS_BACKEND=backend)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        process = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--worker"]
            + ["--repeats", str(args.repeats)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        lines = [
            line
            for line in process.stdout.splitlines()
            if line.startswith("RESULT ")
        ]
        if not lines:
            sys.stderr.write(process.stderr[-3000:])
            raise RuntimeError(f"conv_cost worker for {backend} failed")
        r = json.loads(lines[-1][len("RESULT ") :])
        rows.append(
            f"| {backend} | {r['forward']:.2f} | {r['kernel_gradient']:.2f} "
            f"| {r['conv2d_step']:.2f} | {r['flipout_floor']:.2f}x |"
        )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
