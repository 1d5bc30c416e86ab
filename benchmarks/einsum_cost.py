"""A Bayesian transformer block against the plain one, per backend.

The block: multi-head self-attention whose query, key, value and output
projections are `EinsumDense` layers (`"abc,cde->abde"` to heads,
`"abcd,cde->abe"` back), then an MLP of two `EinsumDense` layers
(`"abc,cd->abd"`, GELU between), each with a residual connection; a
regression loss (mean squared error) on the block's outputs. The same
block is built with `keras.layers.EinsumDense` (the reference) and with
`kb.layers.EinsumDenseFlipout` or `kb.layers.EinsumDenseReparameterization`
in sample mode, and with Flipout layers switched to mean mode.

A training step is `train_on_batch` (SGD), predict is `predict_on_batch`,
both through Keras' compiled functions; the candidates' repeats are
interleaved with the plain block's (`harness.time_steps`). Ratio =
Bayesian / plain (median; quartiles of the per-repeat ratios).

Usage:
    python benchmarks/einsum_cost.py                  # every backend
    python benchmarks/einsum_cost.py --backends jax --repeats 20
    python benchmarks/einsum_cost.py --quick          # tiny sizes
"""

import functools
import sys

import harness

# (name, keras_bayes.layers class, posterior value): the candidates.
CANDIDATES = (
    ("flipout", "EinsumDenseFlipout", "sample"),
    ("reparameterization", "EinsumDenseReparameterization", "sample"),
    ("flipout_mean", "EinsumDenseFlipout", "mean"),
)


def parse_args(argv=None):
    parser = harness.parser(__doc__, repeats=20, warmup=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sequence", type=int, default=16)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    args = harness.parse(parser, argv)
    if args.quick:
        args.batch_size, args.sequence, args.dim, args.heads = 2, 4, 8, 2
    return args


def transformer_block(layer_cls, sequence, dim, heads):
    """A model: self-attention and an MLP of `layer_cls` projections."""
    import keras
    from keras import ops

    head_dim = dim // heads
    inputs = keras.Input((sequence, dim))

    def to_heads():
        return layer_cls(
            "abc,cde->abde", (None, heads, head_dim), bias_axes="de"
        )

    query, key, value = (to_heads()(inputs) for _ in range(3))
    scores = ops.einsum("bqhd,bkhd->bhqk", query, key) / head_dim**0.5
    attended = ops.einsum("bhqk,bkhd->bqhd", ops.softmax(scores), value)
    h = inputs + layer_cls("abcd,cde->abe", (None, dim), bias_axes="e")(
        attended
    )
    hidden = layer_cls(
        "abc,cd->abd", (None, 4 * dim), bias_axes="d", activation="gelu"
    )(h)
    outputs = h + layer_cls("abc,cd->abd", (None, dim), bias_axes="d")(hidden)
    return keras.Model(inputs, outputs)


def _models(args):
    import keras
    import numpy as np

    import keras_bayes as kb

    shape = (args.sequence, args.dim, args.heads)
    models = {"plain": transformer_block(keras.layers.EinsumDense, *shape)}
    for name, class_name, mode in CANDIDATES:
        model = transformer_block(getattr(kb.layers, class_name), *shape)
        kb.set_posterior_value(model, mode)
        models[name] = model
    for model in models.values():
        model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, args.sequence, args.dim))
    y = rng.normal(size=x.shape)
    return models, x.astype("float32"), y.astype("float32")


def measure(args):
    """Training-step and predict ratios of each candidate on this backend."""
    models, x, y = _models(args)
    result = {}
    for kind, method in (("train step", "train_on_batch"),
                         ("predict", "predict_on_batch")):  # fmt: skip
        steps = {
            name: functools.partial(getattr(model, method), x, *(
                (y,) if method == "train_on_batch" else ()))
            for name, model in models.items()
        }  # fmt: skip
        timings = harness.time_steps(steps, args.repeats, args.warmup)
        result[kind] = {
            name: harness.compare(timings[name], timings["plain"])
            for name, _, _ in CANDIDATES
        }
        result[kind]["plain_ms"] = timings["plain"].as_dict()["median_ms"]
    return result


def report(results, args):
    rows = []
    for backend, result in results.items():
        for kind in ("train step", "predict"):
            rows.append(
                [backend, kind, f"{result[kind]['plain_ms']:.2f}"]
                + [
                    harness.fmt_comparison(result[kind][name])
                    for name, _, _ in CANDIDATES
                ]
            )
    return "\n".join(
        [
            f"Transformer block (self-attention, {args.heads} heads, and an "
            f"MLP 4x wide, all projections EinsumDense), batch "
            f"{args.batch_size}, sequence {args.sequence}, width {args.dim}. "
            "Ratio = Bayesian block / the same block of "
            "keras.layers.EinsumDense (median; quartiles of the per-repeat "
            "ratios).",
            "",
            harness.table(
                [
                    "backend",
                    "step",
                    "plain (ms)",
                    "Flipout (sample)",
                    "Reparameterization (sample)",
                    "Flipout (mean mode)",
                ],
                rows,
            ),
        ]
    )


def main(argv=None):
    return harness.main(__file__, parse_args(argv), measure, report)


if __name__ == "__main__":
    sys.exit(main())
