"""Last-layer Laplace: the cost of fitting it, against one `predict` epoch.

On each backend (one worker process each), a small trained-size CNN
classifier (two convolutions, global pooling, a 128-unit dense layer and a
10-class softmax head, about 30,000 weights) on 10,000 32x32x3 examples:

- `predict`: `model.predict(x, batch_size=256)`, one epoch;
- `fit kron`: `kb.laplace.fit(model, x, y)` with its defaults (last layer,
  KFAC, prior precision by marginal likelihood), `batch_size=256`;
- `fit full` (with `--full`): the same with `hessian="full"` (1290
  weights: kernel and bias of the head);
- `predict probit`: `Laplace.predict(x)`, the GLM probit predictive over
  the same examples.

With `--all`, also `fit all`: `subset="all", hessian="diag"` (the exact
GGN diagonal of every weight, from per-example Jacobians) on the first
`ALL_EXAMPLES` examples with `batch_size=32`, against one `predict` epoch
over those examples.

The repeats are interleaved (`harness.time_steps`). Target (issue 21):
`fit kron` at most `TARGET` times `predict`.

Usage:
    python benchmarks/laplace_cost.py                 # every backend
    python benchmarks/laplace_cost.py --backends jax --repeats 5
    python benchmarks/laplace_cost.py --quick         # 256 examples
    python benchmarks/laplace_cost.py --full          # also hessian="full"
    python benchmarks/laplace_cost.py --all           # also subset="all"

`--json PATH` writes the results, `--threads N` sets the workers'
`OMP_NUM_THREADS`.
"""

import functools
import sys

import harness

TARGET = 2.0
ALL_EXAMPLES = 512
CANDIDATES = ("fit kron", "fit full", "predict probit")


def _model(keras):
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(inputs)
    h = keras.layers.Conv2D(64, 3, strides=2, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(128, activation="relu")(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    return keras.Model(inputs, outputs)


def measure(quick=False, repeats=5, warmup=1, full=False, all_layers=False):
    """Median times of the candidates and of `predict`, on this backend.

    Returns:
        A dict: `examples`; `predict` (its `Timing.as_dict()`); and for
        each of `CANDIDATES`, a `harness.compare` against `predict`.
    """
    import keras
    import numpy as np

    import keras_bayes as kb

    keras.utils.set_random_seed(0)
    n = 256 if quick else 10_000
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, n)
    model = _model(keras)
    fitted = kb.laplace.fit(model, x, y, batch_size=256)
    steps = {
        "predict": functools.partial(
            model.predict, x, batch_size=256, verbose=0
        ),
        "fit kron": functools.partial(
            kb.laplace.fit, model, x, y, batch_size=256
        ),
        "predict probit": functools.partial(fitted.predict, x),
    }
    if full:
        steps["fit full"] = functools.partial(
            kb.laplace.fit, model, x, y, hessian="full", batch_size=256
        )
    timings = harness.time_steps(steps, repeats, warmup)
    result = {"examples": n, "predict": timings["predict"].as_dict()}
    for name in CANDIDATES:
        if name in timings:
            result[name] = harness.compare(timings[name], timings["predict"])
    if all_layers:
        few = 32 if quick else ALL_EXAMPLES
        x_few, y_few = x[:few], y[:few]
        timings = harness.time_steps(
            {
                "predict": functools.partial(
                    model.predict, x_few, batch_size=32, verbose=0
                ),
                "fit all": functools.partial(
                    kb.laplace.fit,
                    model,
                    x_few,
                    y_few,
                    subset="all",
                    hessian="diag",
                    batch_size=32,
                ),
            },
            repeats,
            warmup,
        )
        result["all_examples"] = few
        result["fit all"] = harness.compare(
            timings["fit all"], timings["predict"]
        )
    return result


def report(results, args):
    rows = []
    for backend, row in results.items():
        rows.append(
            [backend, row["examples"], harness.fmt_ms(row["predict"])]
            + [
                harness.fmt_comparison(row[name]) if name in row else "-"
                for name in CANDIDATES
            ]
            + ["yes" if row["fit kron"]["ratio"] <= TARGET else "no"]
        )
    header = [
        "backend",
        "examples",
        "predict epoch ms",
        "fit (kron, marglik)",
        "fit (full, marglik)",
        "probit predictive",
        f"fit kron <= {TARGET:.0f}x",
    ]
    text = (
        "Median time / one predict epoch over the same examples (quartiles "
        "of the per-repeat ratios):\n" + harness.table(header, rows)
    )
    rows = [
        [
            backend,
            row["all_examples"],
            harness.fmt_ms(row["fit all"]["reference"]),
            harness.fmt_comparison(row["fit all"]),
        ]
        for backend, row in results.items()
        if "fit all" in row
    ]
    if rows:
        header = ["backend", "examples", "predict epoch ms", "fit all (diag)"]
        text += '\n\nsubset="all", hessian="diag":\n' + harness.table(
            header, rows
        )
    return text


def main(argv=None):
    parser = harness.parser(__doc__, repeats=5, warmup=1)
    parser.add_argument(
        "--full", action="store_true", help='also time hessian="full"'
    )
    parser.add_argument(
        "--all", action="store_true", help='also time subset="all"'
    )
    args = harness.parse(parser, argv)
    return harness.main(
        __file__,
        args,
        lambda a: measure(a.quick, a.repeats, a.warmup, a.full, a.all),
        report,
    )


if __name__ == "__main__":
    sys.exit(main())
