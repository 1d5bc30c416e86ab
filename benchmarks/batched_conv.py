"""Batched convolutions against separate Keras layers.

Times `BatchedConv2D(batch_shape=(B,))` and
`BatchedConv2DTranspose(batch_shape=(B,))` against B separate
`keras.layers.Conv2D` / `Conv2DTranspose` layers whose outputs are stacked,
for an input shared by the members and for one input per member. Forward
is `predict_on_batch`, forward+backward is `train_on_batch` (SGD with a zero
learning rate, so the weights stay put); both go through Keras' compiled
functions. The repeats of the two models are interleaved
(`harness.time_steps`) and the median of each is reported, as the ratio
batched / separate (below 1: batched wins).

Usage:
    python benchmarks/batched_conv.py                  # every backend
    python benchmarks/batched_conv.py --backends jax --threads 1
    python benchmarks/batched_conv.py --member-strategy grouped
"""

import functools
import sys

import harness


def parse_args(argv=None):
    parser = harness.parser(__doc__, repeats=30, warmup=3, quick=False)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=16, help="height, width")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument(
        "--member-strategy",
        choices=("auto", "grouped", "per_member"),
        default="auto",
        help="how members with their own inputs are convolved",
    )
    return harness.parse(parser, argv)


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


def measure(args):
    """The four layer / input cases on the current backend.

    Returns:
        A list of rows: `layer`, `inputs`, and for `forward` and
        `forward+backward` a `harness.compare` of batched against separate.
    """
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
            steps = {
                "forward": {
                    name: functools.partial(model.predict_on_batch, x)
                    for name, model in models.items()
                },
                "forward+backward": {
                    name: functools.partial(model.train_on_batch, x, y)
                    for name, model in models.items()
                },
            }
            for mode, mode_steps in steps.items():
                t = harness.time_steps(mode_steps, args.repeats, args.warmup)
                row[mode] = harness.compare(t["batched"], t["separate"])
            rows.append(row)
            del models, steps, batched, separate
            keras.backend.clear_session()
    return rows


def report(results, args):
    rows = [
        [backend, row["layer"], row["inputs"]]
        + [
            f"{row[mode]['ratio']:.2f} "
            f"({row[mode]['candidate']['median_ms']:.1f} / "
            f"{row[mode]['reference']['median_ms']:.1f} ms)"
            for mode in ("forward", "forward+backward")
        ]
        for backend, backend_rows in results.items()
        for row in backend_rows
    ]
    return "\n".join(
        [
            f"B={args.members} members, N={args.batch_size}, "
            f"{args.size}x{args.size}x{args.channels} -> {args.filters} "
            "filters, kernel 3 (transposed: strides 2, 'same'); member "
            f"strategy: {args.member_strategy}. Ratio = batched / separate "
            "(median).",
            "",
            harness.table(
                ["backend", "layer", "inputs", "forward", "forward+backward"],
                rows,
            ),
        ]
    )


def main(argv=None):
    return harness.main(__file__, parse_args(argv), measure, report)


if __name__ == "__main__":
    sys.exit(main())
