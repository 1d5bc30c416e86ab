"""Batched convolutions against separate Keras layers.

Times `BatchedConv2D(batch_shape=(B,))` and
`BatchedConv2DTranspose(batch_shape=(B,))` against B separate
`keras.layers.Conv2D` / `Conv2DTranspose` layers whose outputs are stacked,
for an input shared by the members and for one input per member. Forward
is `predict_on_batch`, forward+backward is `train_on_batch` (SGD with a zero
learning rate, so the weights stay put); both go through Keras' compiled
functions. The repeats of the two models are interleaved and the median of
each is reported, as the ratio batched / separate (below 1: batched wins).

Usage:
    KERAS_BACKEND=jax python benchmarks/batched_conv.py
    python benchmarks/batched_conv.py --all-backends
"""

import argparse
import json
import os
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all-backends", action="store_true")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=16, help="height, width")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--member-strategy",
        choices=("auto", "grouped", "per_member"),
        default="auto",
        help="how members with their own inputs are convolved",
    )
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _models(args, transpose, member_inputs):
    """`(batched model, separate model, inputs, targets)`."""
    import keras
    import numpy as np
    from keras import ops

    import keras_bayes as kb

    members = args.members
    conv_kwargs = {"filters": args.filters, "kernel_size": 3}
    if transpose:
        keras_cls, batched_cls = (
            keras.layers.Conv2DTranspose,
            kb.layers.BatchedConv2DTranspose,
        )
        conv_kwargs.update(strides=2, padding="same")
    else:
        keras_cls, batched_cls = keras.layers.Conv2D, kb.layers.BatchedConv2D
        conv_kwargs.update(padding="same")
    feature = (args.size, args.size, args.channels)
    if member_inputs:
        feature = (members,) + feature

    inputs = keras.Input(shape=feature)
    batched = keras.Model(
        inputs, batched_cls(**conv_kwargs, batch_shape=(members,))(inputs)
    )
    inputs = keras.Input(shape=feature)
    outputs = [
        keras_cls(**conv_kwargs)(inputs[:, b] if member_inputs else inputs)
        for b in range(members)
    ]
    separate = keras.Model(inputs, ops.stack(outputs, axis=1))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size,) + feature).astype("float32")
    y = rng.normal(size=(args.batch_size,) + batched.output_shape[1:])
    for model in (batched, separate):
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    return batched, separate, x, y.astype("float32")


def _median_seconds(models, mode, x, y, repeats):
    """Median seconds of one step of each model, repeats interleaved."""
    import numpy as np

    def step(model):
        if mode == "forward":
            return model.predict_on_batch(x)
        return model.train_on_batch(x, y)

    times = {name: [] for name in models}
    for model in models.values():  # warm-up: tracing and compilation
        for _ in range(3):
            step(model)
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            step(model)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def run_one_backend(args):
    import keras

    import keras_bayes as kb

    if args.member_strategy != "auto":
        kb.config.set_member_strategy(args.member_strategy)
    rows = []
    for transpose in (False, True):
        for member_inputs in (False, True):
            batched, separate, x, y = _models(args, transpose, member_inputs)
            models = {"batched": batched, "separate": separate}
            row = {
                "layer": "BatchedConv2DTranspose"
                if transpose
                else "BatchedConv2D",
                "inputs": "per member" if member_inputs else "shared",
            }
            for mode in ("forward", "forward+backward"):
                t = _median_seconds(models, mode, x, y, args.repeats)
                row[mode] = {
                    "batched_ms": 1e3 * t["batched"],
                    "separate_ms": 1e3 * t["separate"],
                    "ratio": t["batched"] / t["separate"],
                }
            rows.append(row)
            keras.backend.clear_session()
    return rows


def _format(results, args):
    lines = [
        f"B={args.members} members, N={args.batch_size}, "
        f"{args.size}x{args.size}x{args.channels} -> {args.filters} filters, "
        "kernel 3 (transposed: strides 2, 'same'); member strategy: "
        f"{args.member_strategy}. Ratio = batched / separate (median).",
        "",
        "| backend | layer | inputs | forward | forward+backward |",
        "|---|---|---|---|---|",
    ]
    for backend, rows in results.items():
        for row in rows:
            cells = [
                f"{row[mode]['ratio']:.2f} ({row[mode]['batched_ms']:.1f} / "
                f"{row[mode]['separate_ms']:.1f} ms)"
                for mode in ("forward", "forward+backward")
            ]
            lines.append(
                f"| {backend} | {row['layer']} | {row['inputs']} | "
                f"{cells[0]} | {cells[1]} |"
            )
    return "\n".join(lines)


def main(argv=None):
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if not args.all_backends:
        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        rows = run_one_backend(args)
        if args.json:
            print(json.dumps(rows))
        else:
            print(_format({backend: rows}, args))
        return 0
    # One backend per process: Keras picks its backend once, at import.
    forwarded = [a for a in (argv or sys.argv[1:]) if a != "--all-backends"]
    results = {}
    for backend in BACKENDS:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run(
            [sys.executable, __file__, "--json", *forwarded],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            print(f"{backend} failed:\n{proc.stderr[-4000:]}", file=sys.stderr)
            return 1
        results[backend] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(_format(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
