"""The quality benchmark's data, metrics and a one-seed smoke run.

The benchmark's numbers are produced by `benchmarks/quality.py` and
reported in `docs/quality.md`; here its parts are checked against
references computed another way, and every method runs end to end at the
tiny `--quick` size.
"""

import math
import socket

import numpy as np
import pytest

from tests.scripts import load_script

quality_data = load_script("benchmarks/quality_data.py")

try:
    quality_data.aeon_data_dir()
    AEON = True
except quality_data.DataUnavailable:
    AEON = False
needs_aeon = pytest.mark.skipif(
    not AEON,
    reason=f"JapaneseVowels ships in aeon's wheel: {quality_data.AEON_INSTALL}",
)


@pytest.fixture(scope="module")
def quality():
    return load_script("benchmarks/quality.py")


def test_read_ts_parses_channels_and_labels(tmp_path):
    path = tmp_path / "tiny.ts"
    path.write_text(
        "# a comment\n@problemName tiny\n@classLabel true a b\n@data\n"
        "1,2,3:4,5,6:a\n\n-1,0.5,2e-1:7,8,9:b\n"
    )
    x, labels = quality_data.read_ts(path)
    expected = np.array(
        [[[1, 4], [2, 5], [3, 6]], [[-1, 7], [0.5, 8], [0.2, 9]]],
        dtype="float32",
    )
    np.testing.assert_array_equal(x, expected)
    assert labels.tolist() == ["a", "b"]


def _refuse(*args, **kwargs):
    raise OSError("network disabled in this test")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("digits", id="digits"),
        pytest.param("vowels", id="vowels", marks=needs_aeon),
    ],
)
def test_tasks_load_offline_and_split_cleanly(name, monkeypatch):
    for attribute in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, attribute, _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)
    task = quality_data.TASKS[name](seed=3)
    parts = ("train", "val", "test")
    sizes = {part: len(task[f"x_{part}"]) for part in parts}
    total = sum(sizes.values()) + len(task["x_ood"])
    # digits: 1,797 images, 354 of them 8s and 9s. JapaneseVowels: 640
    # utterances, 80 + 59 by speakers 8 and 9 (UCR archive's counts).
    assert total == {"digits": 1797, "vowels": 640}[name]
    assert len(task["x_ood"]) == {"digits": 354, "vowels": 139}[name]
    in_distribution = total - len(task["x_ood"])
    assert sizes["test"] == math.ceil(
        quality_data.TEST_FRACTION * in_distribution
    )
    assert task["num_classes"] == {"digits": 8, "vowels": 7}[name]
    for part in parts:
        labels = task[f"y_{part}"]
        assert set(np.unique(labels)) == set(range(task["num_classes"]))
    # No example in two splits.
    rows = {
        part: {x.tobytes() for x in task[f"x_{part}"]}
        for part in parts + ("ood",)
    }
    assert sum(map(len, rows.values())) == total


def test_metrics_against_direct_computation(quality):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 40, 3)) * 2
    samples = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ood = samples[:, :25, ::-1] * 0.5 + 0.5 / 3
    labels = rng.integers(0, 3, size=40)
    result = quality.metrics(samples, labels, ood)

    probs = samples.mean(0)
    assert result["accuracy"] == np.mean(probs.argmax(-1) == labels)
    nll = -np.mean([math.log(probs[i, y]) for i, y in enumerate(labels)])
    assert result["nll"] == pytest.approx(nll, rel=1e-12)
    brier = np.mean(
        [
            sum((probs[i, k] - (k == y)) ** 2 for k in range(3))
            for i, y in enumerate(labels)
        ]
    )
    assert result["brier"] == pytest.approx(brier, rel=1e-12)

    def pairwise_auroc(inside, outside):
        # P(score_out > score_in) + P(tie) / 2 over all pairs.
        wins = [(o > i) + 0.5 * (o == i) for i in inside for o in outside]
        return np.mean(wins)

    def entropy(p):
        return -(p * np.log(p)).sum(-1)

    assert result["auroc_entropy"] == pytest.approx(
        pairwise_auroc(entropy(probs), entropy(ood.mean(0))), rel=1e-12
    )
    information = [
        entropy(s.mean(0)) - entropy(s).mean(0) for s in (samples, ood)
    ]
    assert result["auroc_mi"] == pytest.approx(
        pairwise_auroc(*information), rel=1e-12
    )
    # One prediction (a deterministic network) has no mutual information.
    assert quality.metrics(samples[:1], labels, ood[:1])["auroc_mi"] is None


def test_spec_parsing_and_errors(quality):
    name, settings = quality.parse_spec("flipout:tau=0.1,prior=0.3")
    assert name == "flipout"
    assert (settings["tau"], settings["prior"]) == (0.1, 0.3)
    assert settings["init"] == quality.SETTINGS["init"]
    # The recipe runs as the method and settings it names.
    assert quality.parse_spec("recipe") == quality.parse_spec(quality.RECIPE)
    name, settings = quality.parse_spec("recipe:moped=0.2")
    assert name == quality.parse_spec(quality.RECIPE)[0] != "recipe"
    assert settings["moped"] == 0.2
    with pytest.raises(ValueError, match="Unknown method 'flipouts'"):
        quality.parse_spec("flipouts")
    with pytest.raises(ValueError, match="Unknown setting 'kl'"):
        quality.parse_spec("flipout:kl=0.1")


def test_every_method_runs_at_quick_size(quality):
    results = quality.evaluate(
        "digits", list(quality.METHODS), seeds=[0], num_samples=2, quick=True
    )
    for spec, result in results.items():
        if spec == "rank1" and not quality.rank1_available():
            assert "rank-1" in result["skipped"]
            continue
        (run,) = result["runs"]
        for key in ("accuracy", "ece", "auroc_entropy"):
            assert 0.0 <= run[key] <= 1.0, (spec, key)
        assert run["nll"] > 0 and run["train_seconds"] > 0, spec
        # Only the twin gives a single prediction (no mutual information).
        assert (run["auroc_mi"] is None) == (spec == "twin"), spec
    table = quality.format_table(results)
    for spec in quality.METHODS:
        assert f"| {spec} |" in table
