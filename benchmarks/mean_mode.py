"""Mean mode: a Bayesian layer serving its posterior mean, against Keras.

For each layer kind, on each backend (one worker process each), times
`predict_on_batch` of a one-layer model as a ratio to the matching
`keras.layers` layer holding the same weights (its kernel and bias are the
Bayesian layer's `kernel_loc` and `bias_loc`), on the layer-cost workloads
of `run.py` (`workloads.py`). Three variants of the Bayesian model, all with
the same weights:

- `mean`: built with `posterior_value="mean"`;
- `switched`: built in sample mode, its `predict_on_batch` run (so that the
  predict function is compiled in sample mode), then switched with
  `kb.set_posterior_value(model, "mean")`;
- `sample`: sample mode, for the record.

The repeats of the four models are interleaved (`harness.time_steps`).
Before timing, the two mean variants must give the plain layer's outputs
(else the run stops: it would time the wrong computation), and the sample
variant must not. Target: mean mode at most `TARGET` times the plain layer,
both mean variants, every backend.

Usage:
    python benchmarks/mean_mode.py                      # every backend
    python benchmarks/mean_mode.py --backends torch --repeats 60
    python benchmarks/mean_mode.py --quick --kinds DenseFlipout

`--json PATH` writes the results, `--threads N` sets the workers'
`OMP_NUM_THREADS`.
"""

import functools
import sys

import harness
import workloads

VARIANTS = ("mean", "switched", "sample")
TARGET = 1.10
KINDS = (
    "Conv2DReparameterization",
    "Conv2DFlipout",
    "DenseReparameterization",
    "DenseFlipout",
    "DenseLocalReparameterization",
)
# The Bayesian layers' variables that hold the posterior, copied between
# the variants; the plain layer gets `kernel_loc` and `bias_loc`.
POSTERIOR_VARIABLES = ("kernel_loc", "kernel_untransformed_scale", "bias_loc")


def _variables(layer):
    return {variable.name: variable for variable in layer.weights}


def _same_weights(mean_layer, others, reference):
    """Copies the posterior of `mean_layer` into `others`, and its mean
    into the plain `reference` layer."""
    source = _variables(mean_layer)
    for layer in others:
        target = _variables(layer)
        for name in POSTERIOR_VARIABLES:
            target[name].assign(source[name].numpy())
    reference.set_weights(
        [source["kernel_loc"].numpy(), source["bias_loc"].numpy()]
    )


def _max_abs_diffs(models, x):
    """Largest absolute difference of each variant's outputs from the
    plain layer's; raises if a mean variant is not the plain layer."""
    import numpy as np

    expected = np.asarray(models["keras"].predict_on_batch(x))
    diffs = {}
    for name in VARIANTS:
        output = np.asarray(models[name].predict_on_batch(x))
        diffs[name] = float(np.max(np.abs(output - expected)))
        close = np.allclose(output, expected, rtol=1e-4, atol=1e-4)
        if name != "sample" and not close:
            raise RuntimeError(
                f"{name!r} mean mode differs from the plain layer by up to "
                f"{diffs[name]:.3g}: it would not time mean mode."
            )
    return diffs


def measure(quick=False, repeats=40, warmup=5, kinds=None):
    """Mean-mode `predict_on_batch` ratios on the current backend.

    Args:
        quick: tiny sizes.
        repeats: timed calls of each model.
        warmup: untimed calls of each model first.
        kinds: the layer kinds (default `KINDS`).

    Returns:
        A list of rows: `kind`; for each of `VARIANTS`, a
        `harness.compare` against the plain layer; `keras` (its
        `Timing.as_dict()`); and `max_abs_diff` (each variant's largest
        output difference from the plain layer).
    """
    import keras

    import keras_bayes as kb

    results = []
    for kind in kinds or KINDS:
        workload = workloads.spec(kind, quick)
        shape = workloads.input_shape(workload)
        mean_layer, reference = workloads.keras_layers(
            kind, workload, posterior_value="mean"
        )
        layers = {"mean": mean_layer, "keras": reference}
        for name in ("switched", "sample"):
            layers[name] = workloads.keras_layers(kind, workload)[0]
        models = {
            name: workloads.compiled_model(layer, shape)
            for name, layer in layers.items()
        }
        _same_weights(
            mean_layer, [layers["switched"], layers["sample"]], reference
        )
        x = workloads.example_batch(workload)
        models["switched"].predict_on_batch(x)  # compiled in sample mode
        kb.set_posterior_value(models["switched"], "mean")
        diffs = _max_abs_diffs(models, x)
        timings = harness.time_steps(
            {
                name: functools.partial(model.predict_on_batch, x)
                for name, model in models.items()
            },
            repeats,
            warmup,
        )
        row = {
            name: harness.compare(timings[name], timings["keras"])
            for name in VARIANTS
        }
        row.update(
            kind=kind,
            keras=timings["keras"].as_dict(),
            max_abs_diff=diffs,
        )
        results.append(row)
        del models, layers, mean_layer, reference
        keras.backend.clear_session()
    return results


def report(results, args):
    rows = []
    for backend, backend_rows in results.items():
        for row in backend_rows:
            met = all(row[name]["ratio"] <= TARGET for name in VARIANTS[:2])
            rows.append(
                [backend, row["kind"]]
                + [harness.fmt_comparison(row[name]) for name in VARIANTS]
                + [harness.fmt_ms(row["keras"]), "yes" if met else "no"]
            )
    header = [
        "backend",
        "layer",
        "mean mode",
        "switched to mean after compile",
        "sample mode",
        "keras ms",
        f"mean <= {TARGET:.2f}x",
    ]
    return (
        "predict_on_batch, median time / the plain keras layer's (quartiles "
        "of the per-repeat ratios):\n" + harness.table(header, rows)
    )


def main(argv=None):
    parser = harness.parser(__doc__, repeats=40, warmup=5, kinds=KINDS)
    args = harness.parse(parser, argv)
    return harness.main(
        __file__,
        args,
        lambda a: measure(a.quick, a.repeats, a.warmup, a.kinds),
        report,
    )


if __name__ == "__main__":
    sys.exit(main())
