"""Run the test suite on TensorFlow, JAX and PyTorch, one process each.

Usage:
    python tests/run_all_backends.py [--backends tensorflow,jax] [PYTEST ARGS]

The backends' pytest processes run in parallel (a Keras backend is chosen
once per process, through `KERAS_BACKEND`); a whole-suite run splits the
JAX suite, the longest, into two processes by test file (`SHARDS`). Each
process's full log goes to `.test-logs/<backend>.log` (`jax-1.log`,
`jax-2.log`); the script prints one summary line per backend and a total,
and exits non-zero if any backend had a failure, an error, or ran no test
at all.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("tensorflow", "jax", "torch")


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="comma-separated subset of: " + ", ".join(BACKENDS),
    )
    args, pytest_args = parser.parse_known_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backend(s) {unknown}; choose from {BACKENDS}")
    return backends, pytest_args


# The JAX suite compiles the most and runs longest: it is split into this
# many processes (by test file), so that the cores that TensorFlow and
# PyTorch free once they finish keep working on it.
SHARDS = {"jax": 2}


def _shards(backend, pytest_args):
    """`(name, pytest args)` of each process of `backend`: one, or, for a
    whole-suite run of a backend in `SHARDS`, one per share of the test
    files (every file in exactly one share)."""
    count = SHARDS.get(backend, 1)
    names_tests = any(not arg.startswith("-") for arg in pytest_args)
    if count == 1 or names_tests:
        return [(backend, pytest_args)]
    files = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").glob("test_*.py")
    )
    return [
        (f"{backend}-{index + 1}", [*pytest_args, *files[index::count]])
        for index in range(count)
    ]


def _start(backend, name, pytest_args, log_dir, report_dir):
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("PYTHONHASHSEED", "0")
    # Three processes share the cores: one intra-op thread each keeps torch
    # from spinning threads against the other backends.
    env.setdefault("OMP_NUM_THREADS", "1")
    # XLA (JAX, and TensorFlow's `jit_compile=True`) without its LLVM
    # optimisation passes: the suite's tiny programs are compiled far more
    # often than they run, and this halves the JAX suite's CPU time. The
    # results are the same computations; only their machine code is less
    # optimised. Set XLA_FLAGS to test with XLA's defaults.
    env.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
    report = report_dir / f"{name}.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rs",
        f"--junitxml={report}",
        "-o",
        f"junit_suite_name={backend}",
        *pytest_args,
    ]
    log = open(log_dir / f"{name}.log", "w")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    return proc, log, report


def _counts(report):
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    if not report.exists():
        return counts
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    for suite in suites:
        tests = int(suite.get("tests", 0))
        failures = int(suite.get("failures", 0))
        errors = int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        counts["failed"] += failures
        counts["errors"] += errors
        counts["skipped"] += skipped
        counts["passed"] += tests - failures - errors - skipped
    return counts


def main(argv=None):
    backends, pytest_args = _parse_args(sys.argv[1:] if argv is None else argv)
    log_dir = ROOT / ".test-logs"
    log_dir.mkdir(exist_ok=True)
    # Reports in a private folder: runs started side by side must not read
    # each other's counts.
    report_dir = Path(tempfile.mkdtemp(prefix="keras-bayes-tests-"))
    start = time.monotonic()
    running = {
        backend: [
            (name, *_start(backend, name, args, log_dir, report_dir))
            for name, args in _shards(backend, pytest_args)
        ]
        for backend in backends
    }
    print(f"running the suite on {', '.join(backends)} (logs in {log_dir})")
    sys.stdout.flush()

    # Each backend is reported when its last process ends.
    results, failed_logs = {}, []
    while len(results) < len(running):
        for backend, processes in running.items():
            if backend in results:
                continue
            if any(proc.poll() is None for _, proc, _, _ in processes):
                continue
            code, counts = (
                0,
                dict.fromkeys(("passed", "failed", "skipped", "errors"), 0),
            )
            for name, proc, log, report in processes:
                log.close()
                for key, value in _counts(report).items():
                    counts[key] += value
                if proc.returncode != 0:
                    code = code or proc.returncode
                    failed_logs.append((name, proc.returncode))
            elapsed = time.monotonic() - start
            results[backend] = (code, counts, elapsed)
            shards = (
                f", {len(processes)} processes" if len(processes) > 1 else ""
            )
            print(
                f"{backend}: {counts['passed']} passed, {counts['failed']} "
                f"failed, {counts['errors']} errors, {counts['skipped']} "
                f"skipped (exit {code}, {elapsed:.0f} s{shards})"
            )
            sys.stdout.flush()
        time.sleep(0.5)

    ok = True
    for code, counts, _ in results.values():
        ran = counts["passed"] + counts["failed"] + counts["errors"]
        if code != 0 or ran == 0:
            ok = False
    for name, code in failed_logs:
        log_text = (log_dir / f"{name}.log").read_text()
        print(f"\n===== {name} failed (exit {code}); end of its log =====")
        print(log_text[-12000:])

    shutil.rmtree(report_dir, ignore_errors=True)
    total = {
        k: sum(r[1][k] for r in results.values())
        for k in results[backends[0]][1]
    }
    print(
        f"\ntotal: {total['passed']} passed, "
        f"{total['failed'] + total['errors']} failed, "
        f"{total['skipped']} skipped"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
