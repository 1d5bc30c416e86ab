"""The quality benchmark's data, metrics and a one-seed smoke run.

The benchmark's numbers are produced by `benchmarks/quality.py` and
reported in `docs/quality.md`; here its parts (data, shifts, metrics,
conformal rows, paired differences) are checked against references
computed another way, and every method runs end to end at the tiny
`--quick` size, in this process (`work` and `report`, without the
harness's worker processes).
"""

import math
import socket

import numpy as np
import pytest

from tests.scripts import load_script

quality_data = load_script("benchmarks/quality_data.py")
quality_models = load_script("benchmarks/quality_models.py")

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


def test_rotation_matches_quarter_turns_and_flips():
    rng = np.random.default_rng(1)
    images = rng.random((3, 8, 8, 1)).astype("float32")
    rotate = quality_data.rotate
    np.testing.assert_array_equal(rotate(images, 0), images)
    # Counter-clockwise on screen, as np.rot90 over the image axes.
    for turns in (1, 2, 3):
        np.testing.assert_allclose(
            rotate(images, 90 * turns),
            np.rot90(images, turns, axes=(1, 2)),
            atol=1e-6,
        )
    np.testing.assert_allclose(
        rotate(images, 180), images[:, ::-1, ::-1], atol=1e-6
    )


def test_rotation_interpolates_bilinearly():
    # A 3x3 image turned 45 degrees: the centre stays; the middle of the
    # top edge reads the input at distance 1 along the diagonal towards
    # the top-right corner, (1 - 1/sqrt 2, 1 + 1/sqrt 2) in (row, col).
    image = np.arange(9, dtype="float64").reshape(1, 3, 3, 1)
    out = quality_data.rotate(image, 45)
    assert out[0, 1, 1, 0] == pytest.approx(4.0)
    t = 1 / math.sqrt(2)
    row, col = 1 - t, 1 + t  # rows 0-1, cols 1-2
    wy, wx = row - 0, col - 1
    expected = (
        (1 - wy) * (1 - wx) * 1
        + (1 - wy) * wx * 2
        + wy * (1 - wx) * 4
        + wy * wx * 5
    )
    # Coordinates are rounded to 1e-9 (so quarter turns stay exact).
    assert out[0, 0, 1, 0] == pytest.approx(expected, abs=1e-8)
    # The top-left corner reads (1 - sqrt 2, 1): between row -1, outside
    # (zero), and the input's (0, 1) = 1, at weight 2 - sqrt 2 on the latter.
    assert out[0, 0, 0, 0] == pytest.approx(2 - math.sqrt(2), abs=1e-8)


def test_noise_has_the_requested_spread():
    images = np.zeros((200, 8, 8, 1), dtype="float32")
    noisy = quality_data.add_noise(images, 0.5, seed=[0, 1])
    # 12,800 draws: the sample std is within 1.5 % of 0.5 (4 standard
    # errors: sqrt(1 / (2 * 12800)) = 0.6 %).
    assert abs(noisy.std() / 0.5 - 1) < 0.025
    assert abs(noisy.mean()) < 4 * 0.5 / math.sqrt(noisy.size)
    again = quality_data.add_noise(images, 0.5, seed=[0, 1])
    np.testing.assert_array_equal(noisy, again)


def test_shifted_test_sets_cover_the_sweep():
    task = quality_data.digits(seed=0)
    sets = quality_data.shifted_test_sets(task, seed=0)
    rotations = [f"rotate {a}" for a in range(0, 181, 15)]
    noises = [f"noise {s:g}" for s in quality_data.NOISE_LEVELS]
    assert list(sets) == rotations + noises
    np.testing.assert_array_equal(sets["rotate 0"], task["x_test"])
    for images in sets.values():
        assert images.shape == task["x_test"].shape


def test_conformal_metrics_against_direct_computation(quality):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(400, 4)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = (probs.cumsum(1) > rng.uniform(size=(400, 1))).argmax(1)
    result = quality.conformal_metrics(
        probs[:200], labels[:200], probs[200:], labels[200:]
    )
    # LAC by hand: the ceil(201 * 0.9) = 181st smallest score 1 - p_y.
    scores = np.sort(1 - probs[np.arange(200), labels[:200]])
    sets = 1 - probs[200:] <= scores[180]
    assert result["lac_coverage"] == np.mean(sets[np.arange(200), labels[200:]])
    assert result["lac_size"] == sets.sum(1).mean()
    assert result["aps_size"] >= 1.0


def test_pooled_difference_and_its_standard_errors(quality):
    rng = np.random.default_rng(3)
    twin = {s: rng.random(50) for s in range(3)}
    method = {s: twin[s] + rng.normal(0.1, 0.2, 50) for s in range(3)}
    pooled = quality._pooled(method, twin)
    differences = [method[s] - twin[s] for s in range(3)]
    means = [d.mean() for d in differences]
    assert pooled["mean"] == pytest.approx(np.mean(means), rel=1e-12)
    assert pooled["se_seeds"] == pytest.approx(
        np.std(means, ddof=1) / math.sqrt(3), rel=1e-12
    )
    within = sum(d.var(ddof=1) / 50 for d in differences)
    assert pooled["se_examples"] == pytest.approx(
        math.sqrt(within) / 3, rel=1e-12
    )
    assert pooled["count"] == 150


def test_every_method_runs_at_quick_size(quality):
    args = quality.parse_args(
        ["--quick", "--tasks", "digits", "--methods", *quality.METHODS]
    )
    assert args.seeds == [0, 1, 2, 3, 4]
    output = quality.work(args)
    task = output["tasks"]["digits"]
    results = task["methods"]
    assert task["seeds"] == [0]
    for spec, result in results.items():
        if spec == "rank1" and not quality_models.rank1_available():
            assert "rank-1" in result["skipped"]
            continue
        if spec == "laplace" and "skipped" in result:
            # Not silently dropped: the reason is in the table.
            assert result["skipped"].startswith(("unavailable:", "failed:"))
            continue
        (run,) = result["runs"]
        for key in ("accuracy", "ece", "auroc_entropy"):
            assert 0.0 <= run[key] <= 1.0, (spec, key)
        assert run["nll"] > 0 and run["train_seconds"] > 0, spec
        for score in ("lac", "aps"):
            assert 0.0 <= run[f"{score}_coverage"] <= 1.0, spec
            assert 0.0 <= run[f"{score}_size"] <= 8.0, spec
        assert len(run["shifts"]) == 13 + len(quality_data.NOISE_LEVELS)
        # Only the single-prediction methods have no mutual information.
        single = spec in ("twin", "temperature", "laplace")
        assert (run["auroc_mi"] is None) == single, spec
    # Temperature scaling never changes the predicted class.
    for shift, values in results["temperature"]["shifts"].items():
        twin = results["twin"]["shifts"][shift]
        assert values["accuracy"] == twin["accuracy"], shift
    assert "nll_minus_twin_pooled" in results["temperature"]
    text = quality.report({"jax": output}, args)
    for spec in quality.METHODS:
        assert f"| {spec} |" in text
    assert "Shift sweep, nll" in text and "LAC coverage" in text
