"""Last-layer Laplace: the cost of fitting it, against one `predict` epoch.

On each backend (one worker process each), a small trained-size CNN
classifier (two convolutions, global pooling, a 128-unit dense layer and a
10-class softmax head, about 30,000 weights) on 10,000 32x32x3 examples:

- `predict`: `model.predict(x, batch_size=256)`, one epoch;
- `fit kron`: `kb.laplace.fit(model, x, y)` with its defaults (last layer,
  KFAC, prior precision by marginal likelihood), `batch_size=256`;
- `fit full`: the same with `hessian="full"` (1290 weights: kernel and
  bias of the head);
- `predict probit`: `Laplace.predict(x)`, the GLM probit predictive over
  the same examples.

The repeats are interleaved (`harness.time_steps`). Target (issue 21):
`fit kron` at most `TARGET` times `predict`.

Usage:
    python benchmarks/laplace_cost.py                 # every backend
    python benchmarks/laplace_cost.py --backends jax --repeats 5
    python benchmarks/laplace_cost.py --quick         # 1000 examples

`--json PATH` writes the results, `--threads N` sets the workers'
`OMP_NUM_THREADS`.
"""

import functools
import sys

import harness

TARGET = 2.0
CANDIDATES = ("fit kron", "fit full", "predict probit")


def _model(keras):
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(inputs)
    h = keras.layers.Conv2D(64, 3, strides=2, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(128, activation="relu")(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    return keras.Model(inputs, outputs)


def measure(quick=False, repeats=5, warmup=1):
    """Median times of the candidates and of `predict`, on this backend.

    Returns:
        A dict: `examples`; `predict` (its `Timing.as_dict()`); and for
        each of `CANDIDATES`, a `harness.compare` against `predict`.
    """
    import keras
    import numpy as np

    import keras_bayes as kb

    keras.utils.set_random_seed(0)
    n = 1000 if quick else 10_000
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
        "fit full": functools.partial(
            kb.laplace.fit, model, x, y, hessian="full", batch_size=256
        ),
        "predict probit": functools.partial(fitted.predict, x),
    }
    timings = harness.time_steps(steps, repeats, warmup)
    result = {"examples": n, "predict": timings["predict"].as_dict()}
    for name in CANDIDATES:
        result[name] = harness.compare(timings[name], timings["predict"])
    return result


def report(results, args):
    rows = []
    for backend, row in results.items():
        rows.append(
            [backend, row["examples"], harness.fmt_ms(row["predict"])]
            + [harness.fmt_comparison(row[name]) for name in CANDIDATES]
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
    return (
        "Median time / one predict epoch over the same examples (quartiles "
        "of the per-repeat ratios):\n" + harness.table(header, rows)
    )


def main(argv=None):
    parser = harness.parser(__doc__, repeats=5, warmup=1)
    args = harness.parse(parser, argv)
    return harness.main(
        __file__,
        args,
        lambda a: measure(a.quick, a.repeats, a.warmup),
        report,
    )


if __name__ == "__main__":
    sys.exit(main())
