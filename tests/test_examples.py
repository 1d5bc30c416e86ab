"""Smoke tests of the examples at tiny settings, on every backend.

The full demo (its accuracy, its run time) is run by `make demo`; here each
example's `main()` runs end to end in seconds (one epoch, two or three Monte
Carlo samples): the numbers must be finite and in range, the figures must
be written, and each command line's defaults must be `main()`'s.
"""

import inspect
import math
from pathlib import Path

import numpy as np
import pytest

from tests.scripts import load_script

LOG_10 = math.log(10)


def _load(name):
    return load_script(f"examples/{name}.py")


def _assert_png(path):
    path = Path(path)
    assert path.is_file(), path
    with path.open("rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
    assert path.stat().st_size > 1000, path


# -- the digits demo ----------------------------------------------------------


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
    for images in ("digits", "noise"):
        entropy = results[f"entropy_{images}"]
        information = results[f"mutual_information_{images}"]
        assert 0.0 <= entropy <= LOG_10 + 1e-9
        assert 0.0 <= information <= entropy + 1e-9
    # Laplace keeps the twin's network: its probit predictive moves an
    # argmax only where the logits nearly tie.
    assert results["laplace_prior_precision"] > 0.0
    assert abs(results["laplace_accuracy"] - results["twin_accuracy"]) <= 0.02
    out = capsys.readouterr().out
    assert "Bayesian  twin    Laplace" in out
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


# -- the reliability, denoising and conversion examples ----------------------


@pytest.mark.parametrize(
    "name",
    ["digits_reliability", "denoising_autoencoder", "convert_pretrained_cnn"],
)
def test_cli_defaults_match_main(name):
    module = _load(name)
    defaults = {
        key: parameter.default
        for key, parameter in inspect.signature(module.main).parameters.items()
    }
    assert vars(module._parse_args([])) == defaults


def test_digits_reliability_runs_at_tiny_settings(tmp_path, capsys):
    module = _load("digits_reliability")
    results = module.main(
        epochs=1, num_samples=2, seed=1, output_dir=tmp_path, verbose=0
    )
    for key in ("accuracy", "ece", "entropy_digits", "entropy_noise"):
        assert math.isfinite(results[key]), key
    assert 0.0 <= results["accuracy"] <= 1.0
    assert 0.0 <= results["ece"] <= 1.0
    for key in ("entropy_digits", "entropy_noise"):
        assert 0.0 <= results[key] <= LOG_10 + 1e-9, key
    for key in ("reliability_png", "entropy_png"):
        assert Path(results[key]).parent == tmp_path
        _assert_png(results[key])
    assert f"{results['ece']:.4f}" in capsys.readouterr().out


def test_reliability_bins_against_direct_count():
    module = _load("digits_reliability")
    probs = np.array([[0.95, 0.05], [0.05, 0.95], [0.35, 0.65], [0.6, 0.4]])
    labels = np.array([0, 0, 1, 1])
    count, accuracy, confidence = module.reliability_bins(labels, probs, 5)
    # Confidences 0.95, 0.95, 0.65, 0.6 fall in bins [0.8, 1) and [0.6, 0.8).
    np.testing.assert_array_equal(count, [0, 0, 0, 2, 2])
    np.testing.assert_allclose(accuracy[3:], [0.5, 0.5])
    np.testing.assert_allclose(confidence[3:], [0.625, 0.95])
    assert np.all(np.isnan(accuracy[:3]))


def test_denoising_autoencoder_runs_at_tiny_settings(tmp_path):
    module = _load("denoising_autoencoder")
    results = module.main(
        epochs=1,
        num_samples=2,
        num_images=3,
        seed=1,
        output_dir=tmp_path,
        verbose=0,
    )
    # Pixels and the sigmoid output lie in [0, 1], so every MSE does too;
    # the noisy input differs from the clean image (noise std 0.3).
    for key in ("mse_denoised", "mse_noisy", "mean_std"):
        assert math.isfinite(results[key]), key
    assert 0.0 < results["mse_denoised"] <= 1.0
    assert 0.0 < results["mse_noisy"] <= 1.0
    # Two Flipout samples of a [0, 1] output: std in (0, 0.5].
    assert 0.0 < results["mean_std"] <= 0.5
    assert Path(results["grid_png"]).parent == tmp_path
    _assert_png(results["grid_png"])


def test_convert_pretrained_cnn_runs_at_tiny_settings(capsys):
    module = _load("convert_pretrained_cnn")
    results = module.main(
        epochs=1, finetune_epochs=1, num_samples=2, seed=1, verbose=0
    )
    assert results["mean_mode_max_difference"] <= module.MEAN_MODE_TOLERANCE
    for stage in ("before", "after"):
        row = results[stage]
        assert 0.0 <= row["accuracy"] <= 1.0, stage
        assert 0.0 <= row["ece"] <= 1.0, stage
        assert 0.0 < row["nll"] < math.inf, stage
    out = capsys.readouterr().out
    assert "mean mode equals the original" in out
    assert f"{results['after']['accuracy']:>10.4f}" in out


# -- post-hoc calibration of a keras.applications model ----------------------


@pytest.mark.slow
def test_calibrate_mobilenet_runs_at_tiny_settings(capsys):
    module = _load("calibrate_mobilenet")
    results = module.main(epochs=1, alpha=0.35, seed=1)
    assert results["temperature"] > 0
    # Dividing logits by T > 0 keeps every predicted class.
    assert results["after"]["accuracy"] == results["before"]["accuracy"]
    for name in ("before", "after"):
        assert results[name]["nll"] > 0
        assert 0.0 <= results[name]["ece"] <= 1.0
    for score in ("lac", "aps"):
        assert 0.0 <= results["sets"][score]["coverage"] <= 1.0
        assert 0.0 <= results["sets"][score]["size"] <= 10.0
    assert results["reload_difference"] < 1e-5
    out = capsys.readouterr().out
    assert f"fitted temperature {results['temperature']:.3f}" in out


def test_calibrate_mobilenet_cli_defaults_match_main():
    module = _load("calibrate_mobilenet")
    defaults = {
        key: parameter.default
        for key, parameter in inspect.signature(module.main).parameters.items()
    }
    assert vars(module._parse_args([])) == defaults
