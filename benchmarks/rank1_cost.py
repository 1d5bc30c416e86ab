"""Rank-1 layers: parameters and cost of K members against one plain layer.

`Conv2DRank1(filters, 3, padding="same", batch_shape=(K,))` on an input
shared by its K members, in sample mode (factors drawn per example), against
one `keras.layers.Conv2D(filters, 3, padding="same")` on the K * N examples
that the members see between them: the same convolution arithmetic. Forward
is `predict_on_batch`, a training step is `train_on_batch` (SGD, mean squared
error); both go through Keras' compiled functions, the repeats of the two
models interleaved (`harness.time_steps`).

Targets: trainable parameters at most the plain layer's plus
`2 * K * (in_channels + 2 * filters)` (loc and scale of each factor, and the
members' biases); a training step at most `TARGET` times the plain layer's.

Usage:
    python benchmarks/rank1_cost.py                  # every backend
    python benchmarks/rank1_cost.py --backends jax --members 8
    python benchmarks/rank1_cost.py --quick          # tiny sizes, a smoke run
"""

import functools
import sys

import harness

TARGET = 1.3


def parse_args(argv=None):
    parser = harness.parser(__doc__, repeats=30, warmup=3)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=32, help="height, width")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--filters", type=int, default=32)
    args = harness.parse(parser, argv)
    if args.quick:
        args.members, args.batch_size, args.size = 2, 2, 6
        args.channels, args.filters = 2, 4
    return args


def parameter_budget(plain_parameters, members, channels, filters):
    """The most parameters the rank-1 layer may have."""
    return plain_parameters + 2 * members * (channels + 2 * filters)


def trainable_parameters(model):
    """Trainable parameters (the layers' control scalars, `kl_weight` and
    the sample/mean switch, are not trained and not counted)."""
    import math

    return sum(math.prod(v.shape) for v in model.trainable_weights)


def _models(args):
    """`(rank-1 model, plain model, inputs per model, targets per model)`."""
    import keras
    import numpy as np

    import keras_bayes as kb

    k, n = args.members, args.batch_size
    shape = (args.size, args.size, args.channels)
    conv = {"filters": args.filters, "kernel_size": 3, "padding": "same"}

    inputs = keras.Input(shape)
    rank1 = keras.Model(
        inputs, kb.layers.Conv2DRank1(**conv, batch_shape=(k,), seed=1)(inputs)
    )
    inputs = keras.Input(shape)
    plain = keras.Model(inputs, keras.layers.Conv2D(**conv)(inputs))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n,) + shape).astype("float32")
    y = rng.normal(size=(n,) + rank1.output_shape[1:]).astype("float32")
    # The plain layer sees the members' examples as one batch of K * N.
    x_plain = np.concatenate([x] * k)
    y_plain = np.moveaxis(y, 1, 0).reshape((k * n,) + plain.output_shape[1:])
    for model in (rank1, plain):
        model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    return rank1, plain, (x, x_plain), (y, y_plain)


def measure(args):
    """Parameters, forward and training-step ratios on this backend."""
    rank1, plain, (x, x_plain), (y, y_plain) = _models(args)
    steps = {
        "forward": {
            "rank1": functools.partial(rank1.predict_on_batch, x),
            "plain": functools.partial(plain.predict_on_batch, x_plain),
        },
        "train step": {
            "rank1": functools.partial(rank1.train_on_batch, x, y),
            "plain": functools.partial(plain.train_on_batch, x_plain, y_plain),
        },
    }
    plain_parameters = trainable_parameters(plain)
    result = {
        "rank1_parameters": trainable_parameters(rank1),
        "plain_parameters": plain_parameters,
        "budget": parameter_budget(
            plain_parameters, args.members, args.channels, args.filters
        ),
    }
    for mode, mode_steps in steps.items():
        timings = harness.time_steps(mode_steps, args.repeats, args.warmup)
        result[mode] = harness.compare(timings["rank1"], timings["plain"])
    return result


def report(results, args):
    rows = []
    for backend, result in results.items():
        rows.append(
            [
                backend,
                f"{result['rank1_parameters']:,} / "
                f"{result['plain_parameters']:,} "
                f"(budget {result['budget']:,})",
            ]
            + [
                harness.fmt_comparison(result[mode])
                for mode in ("forward", "train step")
            ]
        )
    k = args.members
    return "\n".join(
        [
            f"Conv2DRank1, K={k} members sharing N={args.batch_size} inputs of "
            f"{args.size}x{args.size}x{args.channels}, 3x3 to {args.filters} "
            f"filters, 'same', sample mode; against keras.layers.Conv2D on "
            f"K*N={k * args.batch_size} examples. Ratio = rank-1 / plain "
            f"(median; quartiles of the per-repeat ratios). Target: train "
            f"step <= {TARGET}x.",
            "",
            harness.table(
                ["backend", "parameters rank-1 / plain", "forward", "train step"],
                rows,
            ),
        ]
    )


def main(argv=None):
    return harness.main(__file__, parse_args(argv), measure, report)


if __name__ == "__main__":
    sys.exit(main())
