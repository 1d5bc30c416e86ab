"""Smoke test of the layer-cost benchmark at its tiny `--quick` size.

Runs the benchmark functions in this process for the current backend. No
timing is asserted (the machine is shared); only that every layer kind runs
through Keras' compiled train and predict steps and yields usable numbers.
"""

import math

import pytest

from tests.scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/run.py")


def _positive_finite(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_layer_ratios_quick(bench):
    results = bench.measure_keras(quick=True, repeats=2, warmup=1)
    assert [r["kind"] for r in results] == list(bench.workloads(quick=True))
    for result in results:
        assert _positive_finite(result["train_ratio"]), result
        assert _positive_finite(result["infer_ratio"]), result
        for ms in result["train_ms"] + result["infer_ms"]:
            assert _positive_finite(ms), result
        for memory in result["memory_mib"]:
            assert memory is None or (math.isfinite(memory) and memory >= 0)
    table = bench.format_table({"backend": {"layers": results}}, {})
    for kind in bench.workloads():
        assert f"| {kind} |" in table


def test_mc_predict_ratio_quick(bench):
    result = bench.measure_mc_predict(quick=True, repeats=1)
    assert result["num_samples"] == 2
    for key in ("vs_predict", "vs_predict_on_batch", "mc_ms", "predict_ms"):
        assert _positive_finite(result[key]), result


def test_median_pair_interleaves(bench):
    calls = []
    medians = bench._median_pair(
        lambda: calls.append("a"), lambda: calls.append("b"), 4, 1
    )
    # One warm-up pair, then the order alternates every repeat.
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert all(_positive_finite(m) for m in medians)


def test_conv_cost_measures_one_convolution():
    result = load_script("benchmarks/conv_cost.py").measure(repeats=2, warmup=1)
    for key in ("forward", "kernel_gradient", "conv2d_step", "flipout_floor"):
        assert _positive_finite(result[key]), result
