"""The benchmark harness: every script in `benchmarks/` runs through it.

It does four jobs, so that no script writes them again:

- Timing (`time_steps`): the repeats of several candidates are interleaved
  (the order flips every repeat, or every block of repeats), after a
  warm-up, so that drift of a shared machine hits all of them alike. Each
  candidate gets a `Timing`: median, quartiles, min and max. `compare`
  turns two of them into a ratio of medians, with the quartiles of the
  per-repeat ratios as its spread.
- One process per backend (`main`): Keras picks its backend once per
  process, so the script runs itself again as a worker for each backend,
  with `KERAS_BACKEND` set (and `OMP_NUM_THREADS` with `--threads`); the
  worker prints its results as one JSON line.
- JSON out (`--json PATH`): the results of every worker, with the
  versions, CPU count, thread setting and load average of the run.
- Plain-text / markdown tables (`table`, `fmt_ratio`, `fmt_ms`).

A script builds its parser with `parser(...)`, adds its own options, and
hands `main` a `work(args)` (runs in a worker, returns JSON-serialisable
results) and a `report(results, args)` (formats `{worker: results}`):

    python benchmarks/<script>.py                     # tensorflow, jax, torch
    python benchmarks/<script>.py --backends jax --threads 1 --json out.json

This module imports no backend: the parent process stays light, and each
worker imports only the framework it measures.
"""

import argparse
import ctypes
import dataclasses
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")
RESULT_PREFIX = "RESULT "
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Packages whose versions go into every report.
_PACKAGES = (
    "keras",
    "tensorflow-cpu",
    "tensorflow",
    "jax",
    "jaxlib",
    "torch",
    "numpy",
    "tensorflow-probability",
    "tf-keras",
    "bayesian-torch",
)


# -- timing -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Timing:
    """Repeated timings of one candidate, in seconds.

    Args:
        samples: the time of each repeat, in the order they ran.
    """

    samples: tuple

    @property
    def median(self):
        return statistics.median(self.samples)

    @property
    def quartiles(self):
        """`(first quartile, third quartile)`, linear interpolation."""
        return _quartiles(self.samples)

    def as_dict(self):
        """Milliseconds: median, quartiles, min, max, and the repeat count."""
        q1, q3 = self.quartiles
        return {
            "median_ms": 1e3 * self.median,
            "q1_ms": 1e3 * q1,
            "q3_ms": 1e3 * q3,
            "min_ms": 1e3 * min(self.samples),
            "max_ms": 1e3 * max(self.samples),
            "repeats": len(self.samples),
        }


def _quartiles(values):
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def time_steps(steps, repeats, warmup=5, block=1):
    """Times zero-argument callables, their repeats interleaved.

    Each step first runs `warmup` times (tracing, compilation, caches).
    Then the steps take turns: in every round each runs `block` times in a
    row, and the order of the steps is reversed every other round, so that
    no step always follows the same one. `block=1` alternates single calls;
    a larger block keeps a step's calls together, for steps that disturb
    each other's caches when mixed.

    A step must return only when its work is done (a numpy result, a
    `block_until_ready`, a fetched element).

    Args:
        steps: a dict `{name: callable}`.
        repeats: timed calls of each step.
        warmup: untimed calls of each step before the timed ones.
        block: calls of one step in a row within a round.

    Returns:
        `{name: Timing}`.
    """
    if repeats < 1 or block < 1 or warmup < 0:
        raise ValueError(
            "Expected repeats >= 1, block >= 1 and warmup >= 0. Received: "
            f"repeats={repeats}, block={block}, warmup={warmup}"
        )
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
    samples = {name: [] for name in names}
    for round_index, start in enumerate(range(0, repeats, block)):
        order = names[::-1] if round_index % 2 else names
        for name in order:
            step, record = steps[name], samples[name]
            for _ in range(min(block, repeats - start)):
                begin = time.perf_counter()
                step()
                record.append(time.perf_counter() - begin)
    return {name: Timing(tuple(samples[name])) for name in names}


def compare(candidate, reference):
    """A candidate's `Timing` against a reference's.

    Returns:
        A dict: `ratio` (median of the candidate over median of the
        reference), `ratio_q1` / `ratio_q3` (quartiles of the ratios of the
        repeats, taken in the order they ran: the spread of the ratio), and
        `candidate` / `reference` (`Timing.as_dict()`).
    """
    paired = [a / b for a, b in zip(candidate.samples, reference.samples)]
    q1, q3 = _quartiles(paired)
    return {
        "ratio": candidate.median / reference.median,
        "ratio_q1": q1,
        "ratio_q3": q3,
        "candidate": candidate.as_dict(),
        "reference": reference.as_dict(),
    }


# -- memory -----------------------------------------------------------------


def status_mib(field):
    """A field of `/proc/self/status` (e.g. `VmRSS`) in MiB, or None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def resident_mib():
    """Resident set size in MiB (the peak, where there is no `/proc`)."""
    current = status_mib("VmRSS")
    if current is not None:
        return current
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # kilobytes on Linux, bytes on macOS
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def peak_step_memory_mib(step, repeats=3):
    """Growth of the peak resident set over `repeats` calls of `step`.

    The peak (`VmHWM`) is reset to the current resident size through
    `/proc/self/clear_refs`, after handing malloc's free cache back to the
    system, so that a step's working memory shows as growth instead of
    reused cache. Memory a framework keeps in its own pools is not seen.

    Returns:
        MiB, or None where `/proc` cannot do this (not Linux).
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return None
    before = status_mib("VmRSS")
    for _ in range(repeats):
        step()
    peak = status_mib("VmHWM")
    if before is None or peak is None:
        return None
    return max(peak - before, 0.0)


# -- formatting -------------------------------------------------------------


def fmt_ratio(value, spread=None):
    """`1.23x`, or `1.23x (1.20-1.27)` with a `(low, high)` spread."""
    if value is None:
        return "-"
    text = f"{value:.2f}x"
    if spread is not None:
        text += f" ({spread[0]:.2f}-{spread[1]:.2f})"
    return text


def fmt_comparison(result):
    """A `compare` result as its ratio and the quartiles of the ratio."""
    return fmt_ratio(result["ratio"], (result["ratio_q1"], result["ratio_q3"]))


def fmt_ms(timing, spread=False):
    """A `Timing.as_dict()` as `1.23`, or `1.23 (1.20-1.31)` with quartiles."""
    text = f"{timing['median_ms']:.2f}"
    if spread:
        text += f" ({timing['q1_ms']:.2f}-{timing['q3_ms']:.2f})"
    return text


def table(header, rows):
    """A markdown table (plain text that reads as a table too).

    Args:
        header: the column titles.
        rows: lists of cells, one per column; cells are turned into text.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(
                f"Expected {len(header)} cells per row. Received: row={row}"
            )
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


# -- workers: one process per backend ----------------------------------------


@dataclasses.dataclass(frozen=True)
class Worker:
    """One worker process.

    Args:
        name: the key of its results (a backend, or e.g. a peer library).
        backend: its `KERAS_BACKEND`.
        env: further environment variables, as `(name, value)` pairs.
    """

    name: str
    backend: str
    env: tuple = ()


def installed(*modules):
    """Whether every one of the named modules can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in modules)


def parser(description, repeats=None, warmup=None, quick=True, kinds=()):
    """An argument parser with the options every benchmark script has.

    `--backends` (also spelt `--backend`), `--threads`, `--json`; with
    `repeats` / `warmup` given, `--repeats` / `--warmup` with those
    defaults; with `quick`, `--quick` (tiny sizes, a smoke run); with
    `kinds`, `--kinds` (a subset of them; None when not given).

    Args:
        description: the script's docstring; its first line is the summary.
        repeats: default timed repeats, or None for a script that does not
            time repeats.
        warmup: default warm-up calls, or None.
        quick: whether to add `--quick`.
        kinds: the names `--kinds` accepts, or none for no `--kinds`.
    """
    result = argparse.ArgumentParser(
        description=description.splitlines()[0],
        epilog="\n".join(description.splitlines()[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    result.add_argument(
        "--backends",
        "--backend",
        nargs="+",
        choices=BACKENDS,
        default=list(BACKENDS),
        metavar="BACKEND",
        help="Keras backends, each in its own process: "
        + ", ".join(BACKENDS)
        + " (default: all three)",
    )
    result.add_argument(
        "--threads",
        type=int,
        help="OMP_NUM_THREADS of the worker processes (default: inherited)",
    )
    result.add_argument(
        "--json", metavar="PATH", help="also write the results to this file"
    )
    counts = (
        ("repeats", repeats, "timed calls of each candidate"),
        ("warmup", warmup, "untimed calls of each candidate first"),
    )
    for name, default, text in counts:
        if default is not None:
            result.add_argument(
                f"--{name}",
                type=int,
                default=default,
                help=f"{text} (default: {default})",
            )
    if kinds:
        result.add_argument(
            "--kinds",
            nargs="+",
            choices=kinds,
            metavar="KIND",
            help="layer kinds: " + ", ".join(kinds) + " (default: all)",
        )
    if quick:
        result.add_argument("--quick", action="store_true", help="tiny sizes")
    result.add_argument("--worker", help=argparse.SUPPRESS)
    return result


def parse(arg_parser, argv=None):
    """`arg_parser.parse_args(argv)`, keeping `argv` for the workers."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = arg_parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        arg_parser.error(f"expected --threads >= 1, got {args.threads}")
    args.argv = argv
    return args


def backend_workers(args):
    """One `Worker` per backend of `--backends`."""
    return [Worker(backend, backend) for backend in args.backends]


def worker_env(worker, threads=None):
    """The environment of a worker process."""
    env = dict(os.environ)
    env["KERAS_BACKEND"] = worker.backend
    env.update(worker.env)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The repository's keras_bayes, whatever the working directory.
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [ROOT, env.get("PYTHONPATH")])
    )
    return env


class WorkerError(RuntimeError):
    pass


def run_worker(script, worker, args):
    """Runs `script` as `worker` with the parent's arguments.

    Returns:
        The worker's results (its last `RESULT` line, decoded).

    Raises:
        WorkerError: the worker printed no results; the message ends with
            the tail of its stderr.
    """
    command = [sys.executable, os.path.abspath(script), *args.argv]
    command += ["--worker", worker.name]
    process = subprocess.run(
        command,
        env=worker_env(worker, args.threads),
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [
        line
        for line in process.stdout.splitlines()
        if line.startswith(RESULT_PREFIX)
    ]
    if process.returncode != 0 or not lines:
        raise WorkerError(
            f"worker {worker.name!r} failed (exit {process.returncode}):\n"
            + process.stderr[-4000:]
        )
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def environment():
    """Versions, CPU count, thread setting and load average of this run."""
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        load = None
    return {
        "versions": versions,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": load,
    }


def main(script, args, work, report, workers=None):
    """Runs a benchmark script: as a worker, or as the parent of workers.

    In a worker (`--worker NAME`), runs `work(args)` and prints its results
    as one `RESULT` JSON line. Otherwise runs `script` once per worker, in
    turn (never in parallel: they would share the cores), prints the run's
    environment and `report(results, args)`, and with `--json PATH` writes
    `{"script", "argv", "environment", "results", "failed"}` there.

    Args:
        script: the script's `__file__`.
        args: from `parse`.
        work: `work(args)`, returning JSON-serialisable results;
            `args.worker` names the worker.
        report: `report({worker name: results}, args)`, returning text.
        workers: the `Worker`s to run; default one per `--backends`.

    Returns:
        The exit status: 1 if a worker failed (the others still report).
    """
    if args.worker:
        print(RESULT_PREFIX + json.dumps(work(args)), flush=True)
        return 0
    env = environment()
    if args.threads is not None:
        env["omp_num_threads"] = str(args.threads)
    results, failed = {}, []
    for worker in backend_workers(args) if workers is None else workers:
        print(f"measuring {worker.name} ...", file=sys.stderr, flush=True)
        try:
            results[worker.name] = run_worker(script, worker, args)
        except WorkerError as error:
            print(error, file=sys.stderr, flush=True)
            failed.append(worker.name)
    try:
        env["load_average_end"] = os.getloadavg()[0]
    except (OSError, AttributeError):
        pass
    print(
        f"Versions: {env['versions']}; Python {env['python']}; CPU cores: "
        f"{env['cpu_count']}; OMP_NUM_THREADS: {env['omp_num_threads']}; "
        f"load average {env['load_average']} -> "
        f"{env.get('load_average_end')}"
    )
    print(report(results, args))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "script": os.path.basename(script),
                    "argv": args.argv,
                    "environment": env,
                    "results": results,
                    "failed": failed,
                },
                out,
                indent=1,
            )
    return 1 if failed else 0
