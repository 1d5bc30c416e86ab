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

Usage:
    python benchmarks/conversion_cost.py                        # everything
    python benchmarks/conversion_cost.py --backends jax --architectures \
        ResNet50 ConvNeXtTiny --repeats 5
"""

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")
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


def _worker(args):
    sys.path.insert(0, ROOT)
    from tests import architectures

    results = {}
    for name in args.architectures:
        if name in architectures.KERAS_HUB and not (
            architectures.keras_hub_available()
        ):
            continue
        build = architectures.ARCHITECTURES[name][0]
        results[name] = measure(build, args.repeats, args.clock)
        print("ROW " + json.dumps({name: results[name]}), flush=True)
    print("RESULT " + json.dumps(results), flush=True)


def _run_backend(backend, args):
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [sys.executable, os.path.abspath(__file__), "--worker"]
    command += ["--repeats", str(args.repeats), "--clock", args.clock]
    command += ["--architectures", *args.architectures]
    process = subprocess.run(
        command, env=env, capture_output=True, text=True, check=False
    )
    lines = [
        line
        for line in process.stdout.splitlines()
        if line.startswith("RESULT ")
    ]
    if not lines:
        sys.stderr.write(process.stderr[-3000:])
        raise RuntimeError(f"conversion_cost worker for {backend} failed")
    return json.loads(lines[-1][len("RESULT ") :])


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


def _parse_args(argv):
    sys.path.insert(0, ROOT)
    from tests import architectures

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS)
    )
    parser.add_argument(
        "--architectures",
        nargs="+",
        choices=list(architectures.ARCHITECTURES),
        default=list(architectures.ARCHITECTURES),
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clock", choices=list(CLOCKS), default="process")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = _parse_args(argv)
    if args.worker:
        _worker(args)
        return None
    by_backend = {b: _run_backend(b, args) for b in args.backends}
    print(format_table(by_backend))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(by_backend, f, indent=2)
    return by_backend


if __name__ == "__main__":
    main()
