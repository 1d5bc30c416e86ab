"""Smoke tests of the conversion example and the conversion-cost benchmark.

`examples/convert_mobilenet.py` runs end to end at tiny settings (one
epoch, two Monte Carlo samples); its numbers must be finite and in range
and the converted model must equal the original in mean mode. The
benchmark measures a tiny model; no time is asserted (the machine is
shared), only that it yields usable numbers.
"""

import inspect
import math

import keras
import pytest

from tests.backend_marks import only_on
from tests.scripts import load_script


@pytest.fixture(scope="module")
def example():
    return load_script("examples/convert_mobilenet.py")


def test_cli_defaults_match_main(example):
    defaults = {
        key: parameter.default
        for key, parameter in inspect.signature(example.main).parameters.items()
    }
    assert vars(example._parse_args([])) == defaults


def test_digits_are_upsampled_to_32x32_rgb(example):
    x_train, x_test, y_train, y_test = example.load_data(0, 0.2)
    assert x_train.shape[1:] == (32, 32, 3)
    assert len(x_train) + len(x_test) == 1797
    assert 0.0 <= x_train.min() and x_train.max() == 255.0
    # Nearest-neighbour upsampling: 4x4 blocks of one value, grey pixels.
    assert (x_train[:, ::4, ::4] == x_train[:, 3::4, 3::4]).all()
    assert (x_train[..., 0] == x_train[..., 2]).all()


@pytest.mark.slow
@only_on(
    "torch",
    reason="the example trains a MobileNetV3Small end to end: 74 s on torch, "
    "504 s on tensorflow in the suite; to_bayesian on keras.applications "
    "models is tested per backend in tests/test_conversion_models.py",
)
def test_convert_mobilenet_runs_at_tiny_settings(example, capsys):
    results = example.main(
        epochs=1, finetune_epochs=1, num_samples=2, seed=1, verbose=0
    )
    assert results["mean_mode_max_difference"] <= example.MEAN_MODE_TOLERANCE
    assert results["bayesian_layers"] > 0
    for stage in ("before", "after"):
        row = results[stage]
        assert 0.0 <= row["accuracy"] <= 1.0, stage
        assert 0.0 <= row["ece"] <= 1.0, stage
        assert 0.0 < row["nll"] < math.inf, stage
    out = capsys.readouterr().out
    assert "mean mode equals the original" in out
    assert f"{results['bayesian_layers']} layers are Bayesian" in out
    assert f"{results['after']['ece']:>10.4f}" in out


def test_conversion_cost_measures_a_tiny_model():
    bench = load_script("benchmarks/conversion_cost.py")

    def build():
        return keras.Sequential(
            [keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3)]
            + [keras.layers.Flatten(), keras.layers.Dense(2)]
        )

    for clock in ("process", "wall"):
        result = bench.measure(build, repeats=1, clock=clock)
        for key in ("build_s", "convert_s", "ratio"):
            assert math.isfinite(result[key]) and result[key] > 0, result
    table = bench.format_table({"jax": {"tiny": result}})
    assert "| tiny |" in table
