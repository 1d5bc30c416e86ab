"""Smoke tests of the examples at tiny settings, on every backend.

The full demo (its accuracy, its run time) is run by `make demo`; here each
example runs end to end in seconds and returns sane numbers.
"""

import inspect
import math

import pytest

from tests.scripts import load_script


def _load(name):
    return load_script(f"examples/{name}.py")


@pytest.fixture(scope="module")
def digits():
    return _load("digits_bayesian_cnn")


def test_digits_demo_runs_at_tiny_settings(digits, capsys):
    results = digits.main(epochs=1, num_samples=3, seed=1, verbose=0)
    assert results["num_train"] + results["num_test"] == 1797
    for key, value in results.items():
        assert math.isfinite(value), key
    assert 0.0 <= results["accuracy"] <= 1.0
    assert 0.0 <= results["ece"] <= 1.0
    assert results["nll"] > 0.0
    log_10 = math.log(10)
    for images in ("digits", "noise"):
        entropy = results[f"entropy_{images}"]
        information = results[f"mutual_information_{images}"]
        assert 0.0 <= entropy <= log_10 + 1e-9
        assert 0.0 <= information <= entropy + 1e-9
    out = capsys.readouterr().out
    assert f"test accuracy               {results['accuracy']:.4f}" in out
    assert "random-noise images" in out


def test_digits_cli_defaults_match_main(digits):
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(digits.main).parameters.items()
    }
    assert vars(digits._parse_args([])) == defaults
    args = digits._parse_args(["--epochs", "3", "--num-samples", "5"])
    assert (args.epochs, args.num_samples) == (3, 5)
