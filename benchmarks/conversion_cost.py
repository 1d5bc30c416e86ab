"""What `kb.to_bayesian` costs next to building the model, per backend.

For each architecture of `tests/architectures.py` (keras.applications
models with `weights=None` and small inputs, keras-hub backbones built from
arguments), in one process per backend:

- build: the model's constructor, the reference;
- convert: `kb.to_bayesian(model)` on a model just built.

The ratio convert / build is the number to read; the target is at most 2.
Both are timed `--repeats` times, alternating, after one unmeasured round
(first calls compile kernels and fill caches); the medians are reported.
By default the clock is the process' CPU time, which other processes on a
shared machine do not inflate; `--clock wall` measures elapsed time.

Usage (the options of every script in `benchmarks/`, `harness.py`):
    python benchmarks/conversion_cost.py                        # everything
    python benchmarks/conversion_cost.py --backends jax --architectures \
        ResNet50 ConvNeXtTiny --repeats 5
"""

import gc
import os
import statistics
import sys
import time
import warnings

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOCKS = {"process": time.process_time, "wall": time.perf_counter}


def measure(build, repeats=3, clock="process"):
    """Median build and conversion seconds of one architecture, and ratio.

    Args:
        build: a function that returns a new, built Keras model.
        repeats: measured rounds (after one unmeasured round).
        clock: `"process"` (CPU time of this process) or `"wall"`.
    """
    import keras

    import keras_bayes as kb

    now = CLOCKS[clock]
    builds, converts = [], []
    for round_index in range(repeats + 1):
        start = now()
        model = build()
        built = now()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # layers without a class yet
            converted = kb.to_bayesian(model)
        done = now()
        if round_index:
            builds.append(built - start)
            converts.append(done - built)
        del model, converted
        keras.backend.clear_session()
        gc.collect()
    build_s = statistics.median(builds)
    convert_s = statistics.median(converts)
    return {
        "build_s": build_s,
        "convert_s": convert_s,
        "ratio": convert_s / build_s,
    }


def work(args):
    """Every architecture of `--architectures` on this worker's backend;
    one Keras cannot build here (NASNetMobile on PyTorch) is left out."""
    sys.path.insert(0, ROOT)
    from tests import architectures

    results = {}
    for name in args.architectures:
        if name in architectures.KERAS_HUB and not (
            architectures.keras_hub_available()
        ):
            continue
        build = architectures.ARCHITECTURES[name][0]
        try:
            results[name] = measure(build, args.repeats, args.clock)
        except ValueError as error:
            if "is not available with the" not in str(error):
                raise
            print(f"{name}: {error}", file=sys.stderr, flush=True)
    return results


def format_table(by_backend):
    backends = list(by_backend)
    names = list(dict.fromkeys(n for r in by_backend.values() for n in r))
    header = "| architecture | " + " | ".join(
        f"{b} build s | {b} convert s | {b} ratio" for b in backends
    )
    rows = [header + " |", "|---" * (1 + 3 * len(backends)) + "|"]
    for name in names:
        cells = []
        for backend in backends:
            r = by_backend[backend].get(name)
            if r is None:
                cells += ["-", "-", "-"]
            else:
                cells += [
                    f"{r['build_s']:.2f}",
                    f"{r['convert_s']:.2f}",
                    f"{r['ratio']:.2f}x",
                ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def report(results, args):
    return format_table(results)


def parse_args(argv=None):
    sys.path.insert(0, ROOT)
    from tests import architectures

    parser = harness.parser(__doc__, repeats=3, quick=False)
    parser.add_argument(
        "--architectures",
        nargs="+",
        choices=list(architectures.ARCHITECTURES),
        default=list(architectures.ARCHITECTURES),
    )
    parser.add_argument("--clock", choices=list(CLOCKS), default="process")
    return harness.parse(parser, argv)


def main(argv=None):
    return harness.main(__file__, parse_args(argv), work, report)


if __name__ == "__main__":
    sys.exit(main())
