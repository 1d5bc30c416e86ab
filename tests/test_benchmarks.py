"""The benchmark harness, and smoke runs of every benchmark script.

The harness' statistics and call order are checked against references
computed another way; its worker processes are checked end to end with a
small script. Each benchmark script then runs its measurements at tiny
sizes, with a couple of repeats, on the current backend. No timing is
asserted (the machine is shared): only that every measurement runs
through Keras' compiled steps and yields usable numbers.
"""

import importlib
import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.backend_marks import BACKEND, only_on
from tests.scripts import ROOT, load_script

BENCHMARKS = ROOT / "benchmarks"


@pytest.fixture(scope="module", autouse=True)
def _benchmarks_on_path():
    # The scripts import their siblings (`harness`, `workloads`), as they
    # do when run from the command line.
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        yield


@pytest.fixture(scope="module")
def harness():
    return importlib.import_module("harness")


@pytest.fixture(scope="module")
def run_script():
    return load_script("benchmarks/run.py")


@pytest.fixture(scope="module")
def mean_mode():
    return load_script("benchmarks/mean_mode.py")


def _positive_finite(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


def _check_comparison(result):
    """A `harness.compare` result of real timings."""
    assert _positive_finite(result["ratio"]), result
    assert result["ratio_q1"] <= result["ratio_q3"], result
    for side in ("candidate", "reference"):
        timing = result[side]
        assert _positive_finite(timing["median_ms"]), result
        assert (
            timing["min_ms"]
            <= timing["q1_ms"]
            <= timing["median_ms"]
            <= timing["q3_ms"]
            <= timing["max_ms"]
        ), result


# -- harness ------------------------------------------------------------------


def _recorder(calls, name):
    return lambda: calls.append(name)


def test_time_steps_alternates_order(harness):
    calls = []
    steps = {name: _recorder(calls, name) for name in "ab"}
    timings = harness.time_steps(steps, repeats=4, warmup=1)
    # One warm-up call each, then the order flips every repeat.
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert [len(t.samples) for t in timings.values()] == [4, 4]


def test_time_steps_blocks(harness):
    calls = []
    steps = {name: _recorder(calls, name) for name in "abc"}
    timings = harness.time_steps(steps, repeats=5, warmup=0, block=2)
    expected = list("aabbcc") + list("ccbbaa") + list("abc")
    assert calls == expected
    assert [len(t.samples) for t in timings.values()] == [5, 5, 5]


def test_time_steps_times_the_call(harness):
    timings = harness.time_steps(
        {"sleep": lambda: time.sleep(0.005)}, repeats=3, warmup=0
    )
    # `time.sleep` waits at least as long as asked.
    assert min(timings["sleep"].samples) >= 0.005


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"repeats": 0}, id="repeats"),
        pytest.param({"repeats": 2, "block": 0}, id="block"),
        pytest.param({"repeats": 2, "warmup": -1}, id="warmup"),
    ],
)
def test_time_steps_rejects_bad_counts(harness, kwargs):
    calls = []
    with pytest.raises(ValueError, match="Received: repeats="):
        harness.time_steps({"a": _recorder(calls, "a")}, **kwargs)
    assert calls == []


@pytest.mark.parametrize(
    "samples",
    [
        pytest.param((3.0, 1.0, 2.0, 10.0), id="even"),
        pytest.param((0.5, 0.25, 4.0, 1.0, 2.0), id="odd"),
        pytest.param((7.0,), id="single"),
    ],
)
def test_timing_statistics_match_numpy(harness, samples):
    result = harness.Timing(samples).as_dict()
    q1, median, q3 = np.percentile(samples, [25, 50, 75])
    np.testing.assert_allclose(
        [result["q1_ms"], result["median_ms"], result["q3_ms"]],
        [1e3 * q1, 1e3 * median, 1e3 * q3],
    )
    assert result["min_ms"] == 1e3 * min(samples)
    assert result["max_ms"] == 1e3 * max(samples)
    assert result["repeats"] == len(samples)


def test_compare_ratio_and_spread(harness):
    candidate = harness.Timing((2.0, 6.0, 3.0, 4.0))
    reference = harness.Timing((1.0, 2.0, 2.0, 1.0))
    result = harness.compare(candidate, reference)
    assert result["ratio"] == pytest.approx(np.median([2, 6, 3, 4]) / 1.5)
    paired = np.array([2.0, 6.0, 3.0, 4.0]) / np.array([1.0, 2.0, 2.0, 1.0])
    np.testing.assert_allclose(
        [result["ratio_q1"], result["ratio_q3"]],
        np.percentile(paired, [25, 75]),
    )
    assert result["reference"] == reference.as_dict()


def test_table_and_formats(harness):
    text = harness.table(["a", "b"], [[1, "x"], ["y", 2.5]])
    assert text == "| a | b |\n|---|---|\n| 1 | x |\n| y | 2.5 |"
    with pytest.raises(ValueError, match="Expected 2 cells per row"):
        harness.table(["a", "b"], [[1]])
    assert harness.fmt_ratio(1.234) == "1.23x"
    assert harness.fmt_ratio(1.234, (1.1, 1.4)) == "1.23x (1.10-1.40)"
    assert harness.fmt_ratio(None) == "-"
    timing = harness.Timing((0.001, 0.002, 0.004)).as_dict()
    assert harness.fmt_ms(timing, spread=True) == "2.00 (1.50-3.00)"


def test_status_mib_reads_proc(harness):
    resident = harness.resident_mib()
    assert _positive_finite(resident)
    if harness.status_mib("VmRSS") is not None:  # Linux
        assert harness.status_mib("VmRSS") > 0
        assert harness.status_mib("NoSuchField") is None


_FAKE_SCRIPT = """
import os
import sys

sys.path.insert(0, {benchmarks!r})
import harness


def work(args):
    if os.environ["KERAS_BACKEND"] == args.fail_on:
        raise SystemExit("failing on purpose")
    return {{
        "backend": os.environ["KERAS_BACKEND"],
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "worker": args.worker,
        "repeats": args.repeats,
    }}


def report(results, args):
    return "REPORT " + ",".join(results)


parser = harness.parser(__doc__ or "fake", repeats=3, warmup=1)
parser.add_argument("--fail-on")
sys.exit(harness.main(__file__, harness.parse(parser), work, report))
"""


def _run_fake(tmp_path, *argv):
    script = tmp_path / "fake.py"
    script.write_text(_FAKE_SCRIPT.format(benchmarks=str(BENCHMARKS)))
    out = tmp_path / "out.json"
    process = subprocess.run(
        [sys.executable, str(script), *argv, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return process, json.loads(out.read_text())


def test_main_runs_one_worker_per_backend(tmp_path):
    process, written = _run_fake(tmp_path, "--threads", "1", "--repeats", "7")
    assert process.returncode == 0, process.stderr
    assert "REPORT tensorflow,jax,torch" in process.stdout
    assert written["failed"] == []
    assert written["environment"]["omp_num_threads"] == "1"
    assert written["argv"][:4] == ["--threads", "1", "--repeats", "7"]
    for backend in ("tensorflow", "jax", "torch"):
        assert written["results"][backend] == {
            "backend": backend,
            "threads": "1",
            "worker": backend,
            "repeats": 7,
        }


def test_main_reports_a_failed_worker(tmp_path):
    process, written = _run_fake(
        tmp_path, "--backends", "jax", "torch", "--fail-on", "jax"
    )
    assert process.returncode == 1
    assert "worker 'jax' failed" in process.stderr
    assert "failing on purpose" in process.stderr
    assert written["failed"] == ["jax"]
    assert list(written["results"]) == ["torch"]


# -- run.py -------------------------------------------------------------------


def test_layer_ratios_quick(run_script):
    results = run_script.measure_keras(quick=True, repeats=2, warmup=1)
    assert [r["kind"] for r in results] == list(run_script.KINDS)
    for result in results:
        _check_comparison(result["train"])
        _check_comparison(result["infer"])
        for memory in result["memory_mib"]:
            assert memory is None or (math.isfinite(memory) and memory >= 0)
    text = run_script.report({BACKEND: {"layers": results}}, None)
    for kind in run_script.KINDS:
        assert f"| {kind} |" in text
        assert f"| {BACKEND} | {kind} |" in text


def test_mc_predict_ratio_quick(run_script):
    result = run_script.measure_mc_predict(quick=True, repeats=1)
    assert result["num_samples"] == 2
    for key in ("vs_predict", "vs_predict_on_batch", "mc_ms", "predict_ms"):
        assert _positive_finite(result[key]), result


def test_bayesian_torch_quick(run_script):
    pytest.importorskip("bayesian_torch")
    results = run_script.measure_bayesian_torch(quick=True, repeats=2)
    by_kind = {r["kind"]: r for r in results}
    assert set(by_kind) == {
        "Conv2DReparameterization",
        "Conv2DFlipout",
        "Conv2DTransposeFlipout",
        "DenseFlipout",
    }
    for result in results:
        if "error" not in result:
            _check_comparison(result["train"])
            _check_comparison(result["infer"])


@only_on("torch", reason="a keras-bayes layer in a plain torch loop")
def test_torch_flipout_comparison_quick(run_script):
    pytest.importorskip("bayesian_torch")
    result = run_script.compare_torch_flipout(quick=True, repeats=2, warmup=1)
    for key in ("speedup", "loop_speedup", "keras_bayes_ms"):
        assert _positive_finite(result[key]), result
    text = run_script.format_torch_comparison(
        {"torch": {"torch_flipout": result}}
    )
    assert "bayesian-torch" in text


@only_on(
    "tensorflow",
    reason="the TFP worker is a process of its own (tf_keras), whatever "
    "this process' backend: run once",
)
def test_tfp_worker_quick(run_script, harness):
    pytest.importorskip("tensorflow_probability")
    pytest.importorskip("tf_keras")
    args = run_script.parse_args(["--quick", "--repeats", "2", "--warmup", "1"])
    modules, env = run_script.EXTERNAL["tfp"]
    worker = harness.Worker("tfp", "tensorflow", env)
    results = harness.run_worker(run_script.__file__, worker, args)
    kinds = [r["kind"] for r in results["layers"]]
    assert kinds == [
        "Conv2DReparameterization",
        "Conv2DFlipout",
        "DenseFlipout",
        "DenseLocalReparameterization",
    ]
    for result in results["layers"]:
        _check_comparison(result["train"])
        _check_comparison(result["infer"])


# -- the other scripts --------------------------------------------------------


def test_batched_conv_quick():
    script = load_script("benchmarks/batched_conv.py")
    args = script.parse_args(
        "--members 2 --batch-size 2 --size 4 --channels 2 --filters 2 "
        "--repeats 2 --warmup 1".split()
    )
    rows = script.measure(args)
    cases = [(row["layer"], row["inputs"]) for row in rows]
    assert cases == [
        ("BatchedConv2D", "shared"),
        ("BatchedConv2D", "per member"),
        ("BatchedConv2DTranspose", "shared"),
        ("BatchedConv2DTranspose", "per member"),
    ]
    for row in rows:
        _check_comparison(row["forward"])
        _check_comparison(row["forward+backward"])
    assert "| backend | BatchedConv2DTranspose | per member |" in (
        script.report({"backend": rows}, args)
    )


def test_conv_cost_quick():
    script = load_script("benchmarks/conv_cost.py")
    result = script.measure(repeats=2, warmup=1, quick=True)
    for key in ("forward", "kernel_gradient", "conv2d_step", "flipout_floor"):
        assert _positive_finite(result[key]), result
    assert set(result["timings"]) == {
        "forward",
        "kernel_gradient",
        "conv2d_step",
    }
    assert "| backend |" in script.report({"backend": result}, None)


def test_einsum_cost_quick():
    script = load_script("benchmarks/einsum_cost.py")
    args = script.parse_args(["--quick", "--repeats", "2", "--warmup", "1"])
    result = script.measure(args)
    for kind in ("train step", "predict"):
        for name, _, _ in script.CANDIDATES:
            _check_comparison(result[kind][name])
        assert _positive_finite(result[kind]["plain_ms"])
    assert "Flipout (sample)" in script.report({BACKEND: result}, args)


def test_soak_quick():
    script = load_script("benchmarks/soak.py")
    result = script.soak(steps=8, steps_per_epoch=2)
    assert result["steps"] == 8
    for key in ("rss_after_warmup_mib", "rss_end_mib", "seconds"):
        assert _positive_finite(result[key]), result
    assert math.isfinite(result["final_loss"])
    assert "| backend |" in script.report({"backend": result}, None)


# -- mean_mode.py -------------------------------------------------------------


def test_mean_mode_quick(mean_mode):
    rows = mean_mode.measure(quick=True, repeats=2, warmup=1)
    assert [row["kind"] for row in rows] == list(mean_mode.KINDS)
    for row in rows:
        for variant in mean_mode.VARIANTS:
            _check_comparison(row[variant])
        diffs = row["max_abs_diff"]
        # Both mean variants are the plain layer with the posterior mean;
        # sample mode is not (the posterior scale is far above 1e-3).
        assert diffs["mean"] <= 1e-4, row["kind"]
        assert diffs["switched"] <= 1e-4, row["kind"]
        assert diffs["sample"] > 1e-3, row["kind"]
    text = mean_mode.report({"backend": rows}, None)
    for kind in mean_mode.KINDS:
        assert f"| backend | {kind} |" in text


class _Fixed:
    def __init__(self, value):
        self.value = value

    def predict_on_batch(self, x):
        return np.full((2, 3), self.value, "float32")


def test_mean_mode_refuses_a_wrong_mean(mean_mode):
    models = {
        "keras": _Fixed(1.0),
        "mean": _Fixed(1.0),
        "switched": _Fixed(1.5),
        "sample": _Fixed(2.0),
    }
    with pytest.raises(RuntimeError, match="'switched' mean mode differs"):
        mean_mode._max_abs_diffs(models, None)
    models["switched"] = _Fixed(1.0)
    assert mean_mode._max_abs_diffs(models, None) == {
        "mean": 0.0,
        "switched": 0.0,
        "sample": 1.0,
    }


# -- rank1_cost.py ------------------------------------------------------------


def test_rank1_cost_quick():
    script = load_script("benchmarks/rank1_cost.py")
    args = script.parse_args("--quick --repeats 2 --warmup 1".split())
    result = script.measure(args)
    k, c, f = args.members, args.channels, args.filters
    # Shared 3x3 kernel, one bias per member, loc and scale of alpha (C)
    # and gamma (F) per member; the plain layer: kernel and bias.
    assert result["plain_parameters"] == 9 * c * f + f
    assert result["rank1_parameters"] == 9 * c * f + k * f + 2 * k * (c + f)
    assert result["rank1_parameters"] <= result["budget"]
    _check_comparison(result["forward"])
    _check_comparison(result["train step"])
    text = script.report({"backend": result}, args)
    assert "| backend | 104 / 76 (budget 116) |" in text


# -- laplace_cost.py ----------------------------------------------------------


def test_laplace_cost_quick():
    script = load_script("benchmarks/laplace_cost.py")
    result = script.measure(quick=True, repeats=1, warmup=0, all_layers=True)
    for name in ("fit kron", "predict probit", "fit all"):
        _check_comparison(result[name])
    text = script.report({"backend": result}, None)
    assert "| backend | 256 |" in text
    assert "| backend | 32 |" in text
