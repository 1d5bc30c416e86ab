"""Predictive quality: Bayesian and post-hoc methods against the twin.

On real data sets that ship inside Python packages (`quality_data.py`:
scikit-learn's digits and the UCR/UEA JapaneseVowels from aeon's wheel),
trains the same small CNN several ways (`quality_models.py`), with the
same optimizer, schedule, batch size and number of epochs, applies the
post-hoc methods to the trained twin (`quality_methods.py` lists every
method), and reports on the test split:

- accuracy, negative log-likelihood (NLL, nats), expected calibration
  error (ECE, 15 bins) and Brier score of the predictive distribution;
- out-of-distribution AUROC: how well the predictive entropy, and the
  mutual information (the epistemic part), rank the held-out classes'
  examples above the test examples (0.5 = chance, 1 = perfect);
- split conformal prediction sets at `alpha = 0.1` (LAC and APS scores,
  `kb.conformal`) from each method's probabilities, calibrated on the
  validation split: coverage and average set size on the test split;
- on digits, a shift sweep: the test images rotated by 0 to 180 degrees
  and with additive Gaussian noise (`quality_data.shifted_test_sets`),
  the four scores per shift level;
- paired differences against the twin (same seed, same split), with
  their standard deviation over seeds, and for the NLL over all shifted
  test images, its standard error;
- training time (wall clock; for methods built on the twin, the twin's
  training plus their own fit).

Bayesian models predict with `--num-samples` Monte Carlo weight samples.
The script runs through `benchmarks/harness.py`: one worker process per
backend of `--backends`, JSON out with `--json`.

Usage:
    python benchmarks/quality.py --backends jax        # the full tables
    python benchmarks/quality.py --quick               # smoke run, seconds
    python benchmarks/quality.py --backends jax --tasks vowels --split val \\
        --methods twin flipout:tau=0.1 flipout:tau=0.3 --seeds 0 1 2
    python benchmarks/quality.py --backends jax --json quality.json
"""

import math
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tiny models: threads cost more than they save on a shared CPU.
os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import numpy as np  # noqa: E402
import quality_data  # noqa: E402
from quality_methods import (  # noqa: E402
    DEFAULT_SPECS,
    MC_METHODS,
    METHODS,
    RECIPE,
    SETTINGS,
    parse_spec,
    run_method,
)

__all__ = ["METHODS", "RECIPE", "SETTINGS", "parse_spec"]

SAMPLE_COUNTS = (1, 3, 10)
PAIRED = ("accuracy", "nll", "ece", "brier", "auroc_entropy")
SHIFT_METRICS = ("accuracy", "nll", "ece", "brier")
# Miscoverage of the conformal sets.
ALPHA = 0.1
CONFORMAL_SCORES = ("lac", "aps")
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
# `--quick`: a smoke run of every code path, not a measurement: 2 epochs
# on the first `examples` examples of each split, 3 Monte Carlo samples.
QUICK = {"epochs": 2, "num_samples": 3, "examples": 96}


# Metrics ------------------------------------------------------------------


def _auroc(in_scores, out_scores):
    """AUROC of ranking OOD examples above test examples by a score."""
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    return float(roc_auc_score(labels, np.r_[in_scores, out_scores]))


def metrics(test_samples, labels, ood_samples):
    """Scores of Monte Carlo (or member) predictions, shape (S, N, C)."""
    probs = test_samples.mean(axis=0)
    num_classes = probs.shape[-1]
    picked = probs[np.arange(len(labels)), labels]
    one_hot = np.eye(num_classes)[labels]
    import keras_bayes as kb

    unc = kb.uncertainty
    result = {
        "accuracy": float(np.mean(probs.argmax(-1) == labels)),
        "nll": float(-np.mean(np.log(np.maximum(picked, 1e-12)))),
        "ece": unc.expected_calibration_error(labels, probs),
        "brier": float(np.mean(np.sum((probs - one_hot) ** 2, axis=-1))),
        "auroc_entropy": _auroc(
            unc.predictive_entropy(test_samples),
            unc.predictive_entropy(ood_samples),
        ),
        # One prediction has no spread: no mutual information to rank by.
        "auroc_mi": None,
    }
    if len(test_samples) > 1:
        result["auroc_mi"] = _auroc(
            unc.mutual_information(test_samples),
            unc.mutual_information(ood_samples),
        )
    return result


def _example_nll(probs, labels):
    picked = probs[np.arange(len(labels)), labels]
    return -np.log(np.maximum(picked, 1e-12))


def shift_metrics(probs, labels):
    """Accuracy, NLL, ECE and Brier of probabilities `(N, C)`."""
    import keras_bayes as kb

    one_hot = np.eye(probs.shape[-1])[labels]
    return {
        "accuracy": float(np.mean(probs.argmax(-1) == labels)),
        "nll": float(np.mean(_example_nll(probs, labels))),
        "ece": kb.uncertainty.expected_calibration_error(labels, probs),
        "brier": float(np.mean(np.sum((probs - one_hot) ** 2, axis=-1))),
    }


def conformal_metrics(probs_val, y_val, probs_test, y_test):
    """Coverage and average size of split conformal sets, per score."""
    import keras_bayes as kb

    result = {}
    for score in CONFORMAL_SCORES:
        conformal = kb.conformal.SplitConformal(score=score, alpha=ALPHA)
        sets = conformal.fit(probs_val, y_val).predict_sets(probs_test)
        result[f"{score}_coverage"] = kb.conformal.coverage(sets, y_test)
        result[f"{score}_size"] = kb.conformal.average_set_size(sets)
    return result


def _predict_parts(trained, parts):
    """`trained.predict` on every array of `parts` in one call; returns
    `{name: samples (S, N, C)}`."""
    names = list(parts)
    sizes = [len(parts[name]) for name in names]
    samples = trained.predict(np.concatenate([parts[n] for n in names]))
    bounds = np.cumsum([0] + sizes)
    return {
        name: samples[:, bounds[i] : bounds[i + 1]]
        for i, name in enumerate(names)
    }


def evaluate(
    task_name, specs, seeds, split="test", num_samples=30, quick=False
):
    """Every method on every seed; returns a result dict per method.

    Each result holds `runs` (one dict of metrics per seed) and, for every
    metric, `mean` and `std` over seeds (`None` where undefined), or a
    `skipped` note. With a twin: `minus_twin`, the paired differences.
    On digits: `shifts` and `shifts_minus_twin` (per shift level), and
    `nll_minus_twin_pooled` (the NLL difference over every shifted test
    image: mean, standard errors, count).
    """
    import keras

    twins = {}
    results = {spec: {"runs": []} for spec in specs}
    example_nll = {spec: {} for spec in specs}
    for seed in seeds:
        task = quality_data.TASKS[task_name](seed)
        if quick:
            task = {
                key: value[: QUICK["examples"]]
                if key.startswith(("x_", "y_"))
                else value
                for key, value in task.items()
            }
        if split == "val":
            # Tune on the validation split: the test split is never seen.
            task["x_test"], task["y_test"] = task["x_val"], task["y_val"]
        shifted = {}
        if task["name"] == "digits":
            shifted = quality_data.shifted_test_sets(task, seed)
        for spec in specs:
            name, settings = parse_spec(spec)
            if quick:
                settings["epochs"] = QUICK["epochs"]
            out = run_method(name, settings, task, seed, num_samples, twins)
            if isinstance(out, str):
                results[spec] = {"skipped": out}
                continue
            parts = {
                "test": task["x_test"],
                "ood": task["x_ood"],
                "val": task["x_val"],
                **shifted,
            }
            samples = _predict_parts(out, parts)
            y_test = task["y_test"]
            run = metrics(samples["test"], y_test, samples["ood"])
            run.update(
                seed=seed,
                train_seconds=out.seconds,
                num_samples=len(samples["test"]),
            )
            if split == "test":
                run.update(
                    conformal_metrics(
                        samples["val"].mean(0),
                        task["y_val"],
                        samples["test"].mean(0),
                        y_test,
                    )
                )
            if name in MC_METHODS:
                # The same draws, fewer of them: what S samples give.
                run["by_samples"] = {
                    str(s): metrics(
                        samples["test"][:s], y_test, samples["ood"][:s]
                    )
                    for s in SAMPLE_COUNTS
                    if s < len(samples["test"])
                }
            if shifted:
                probs = {shift: samples[shift].mean(0) for shift in shifted}
                run["shifts"] = {
                    shift: shift_metrics(probs[shift], y_test)
                    for shift in shifted
                }
                example_nll[spec][seed] = np.concatenate(
                    [_example_nll(probs[s], y_test) for s in shifted]
                )
            print(
                f"  {task_name} seed {seed} {spec}: "
                + ", ".join(
                    f"{k} {v:.4f}"
                    for k, v in run.items()
                    if isinstance(v, float)
                ),
                file=sys.stderr,
                flush=True,
            )
            results[spec]["runs"].append(run)
        keras.backend.clear_session()
    _summarise(results, example_nll)
    return results


def _summarise(results, example_nll):
    """Spreads over seeds and paired differences against the twin."""
    twin_runs = {
        run["seed"]: run for run in results.get("twin", {}).get("runs", [])
    }
    for spec, result in results.items():
        runs = result.get("runs")
        if not runs:
            continue
        result.update(_spread(runs))
        if "by_samples" in runs[0]:
            result["by_samples"] = {
                count: _spread([run["by_samples"][count] for run in runs])
                for count in runs[0]["by_samples"]
            }
        if "shifts" in runs[0]:
            result["shifts"] = {
                shift: _spread([run["shifts"][shift] for run in runs])
                for shift in runs[0]["shifts"]
            }
        if not twin_runs:
            continue
        # Per seed, method minus twin: the split and the twin's
        # initialisation vary by seed; the difference cancels that.
        result["minus_twin"] = _spread(
            [
                {
                    key: run[key] - twin_runs[run["seed"]][key]
                    for key in PAIRED
                    if run[key] is not None
                }
                for run in runs
            ]
        )
        if "shifts" in runs[0]:
            result["shifts_minus_twin"] = {
                shift: _spread(
                    [
                        {
                            key: run["shifts"][shift][key]
                            - twin_runs[run["seed"]]["shifts"][shift][key]
                            for key in SHIFT_METRICS
                        }
                        for run in runs
                    ]
                )
                for shift in runs[0]["shifts"]
            }
            result["nll_minus_twin_pooled"] = _pooled(
                example_nll[spec], example_nll["twin"]
            )


def _pooled(method, twin):
    """The NLL difference to the twin over every shifted test image.

    Returns its mean over seeds, two standard errors and the count:
    `se_examples` from the spread of the per-image differences within
    each seed (images under different shifts are correlated, so this is
    a lower bound), `se_seeds` from the spread of the per-seed means
    (what the splits and initialisations add; few seeds, so rough).
    """
    seeds = sorted(method)
    differences = [method[s] - twin[s] for s in seeds]
    means = [float(d.mean()) for d in differences]
    variance = sum(float(d.var(ddof=1)) / len(d) for d in differences)
    return {
        "mean": statistics.fmean(means),
        "se_examples": math.sqrt(variance) / len(seeds),
        "se_seeds": (
            statistics.stdev(means) / math.sqrt(len(seeds))
            if len(seeds) > 1
            else None
        ),
        "count": int(sum(len(d) for d in differences)),
    }


def _spread(runs):
    """`{metric: {"mean", "std"}}` over runs; None where undefined."""
    spread = {}
    for key, value in runs[0].items():
        if key == "seed" or not isinstance(value, (float, type(None))):
            continue
        values = [run.get(key) for run in runs]
        if None in values:
            spread[key] = None
            continue
        spread[key] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        }
    return spread


# Report -------------------------------------------------------------------

COLUMNS = (
    ("accuracy", "accuracy", 3),
    ("nll", "NLL", 3),
    ("ece", "ECE", 3),
    ("brier", "Brier", 3),
    ("auroc_entropy", "OOD AUROC (entropy)", 3),
    ("auroc_mi", "OOD AUROC (MI)", 3),
    ("train_seconds", "train s", 1),
)
CONFORMAL_COLUMNS = tuple(
    (f"{score}_{part}", f"{score.upper()} {title}", 3)
    for score in CONFORMAL_SCORES
    for part, title in (("coverage", "coverage"), ("size", "set size"))
)


def format_table(results, part=None, columns=COLUMNS, sign=""):
    """A Markdown table: one row per method, mean ± std over seeds.

    `part`: None for the metrics themselves, `"minus_twin"` for the paired
    differences to the twin.
    """
    lines = [
        "| method | " + " | ".join(title for _, title, _ in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for spec, result in results.items():
        if "skipped" in result:
            lines.append(f"| {spec} | skipped: {result['skipped']} |")
            continue
        values = result if part is None else result.get(part)
        if values is None:
            continue
        cells = []
        for key, _, digits in columns:
            value = values.get(key)
            cells.append(
                "-"
                if value is None
                else f"{value['mean']:{sign}.{digits}f} ± "
                f"{value['std']:.{digits}f}"
            )
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_samples_table(results):
    """NLL, ECE and MI AUROC of the Bayesian methods by sample count."""
    lines = ["| method | samples | NLL | ECE | OOD AUROC (MI) |"]
    lines.append("|---|---|---|---|---|")
    for spec, result in results.items():
        by_samples = dict(result.get("by_samples", {}))
        if not by_samples:
            continue
        by_samples[str(result["runs"][0]["num_samples"])] = result
        for count, values in by_samples.items():
            cells = [
                "-"
                if values[key] is None
                else f"{values[key]['mean']:.4f} ± {values[key]['std']:.4f}"
                for key in ("nll", "ece", "auroc_mi")
            ]
            lines.append(f"| {spec} | {count} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_shift_table(results, metric, part="shifts", sign=""):
    """One row per method, one column per shift level: mean over seeds
    (with `part="shifts_minus_twin"`: mean ± std of the differences)."""
    rows = {
        spec: result[part]
        for spec, result in results.items()
        if result.get(part)
    }
    if not rows:
        return ""
    shifts = list(next(iter(rows.values())))
    lines = [
        "| method | " + " | ".join(shifts) + " |",
        "|---" * (len(shifts) + 1) + "|",
    ]
    for spec, values in rows.items():
        cells = []
        for shift in shifts:
            value = values[shift][metric]
            cell = f"{value['mean']:{sign}.3f}"
            if part == "shifts_minus_twin":
                cell += f" ± {value['std']:.3f}"
            cells.append(cell)
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_pooled_table(results):
    """The NLL difference to the twin over every shifted test image."""
    lines = [
        "| method | NLL minus twin | SE (images) | SE (seeds) | "
        "image evaluations |",
        "|---|---|---|---|---|",
    ]
    for spec, result in results.items():
        pooled = result.get("nll_minus_twin_pooled")
        if pooled is None or spec == "twin":
            continue
        se_seeds = pooled["se_seeds"]
        lines.append(
            f"| {spec} | {pooled['mean']:+.4f} | "
            f"{pooled['se_examples']:.4f} | "
            + ("-" if se_seeds is None else f"{se_seeds:.4f}")
            + f" | {pooled['count']:,} |"
        )
    return "\n".join(lines)


def format_task(task_name, task, args):
    """Every table of one task's results."""
    if "skipped" in task:
        return f"{task_name}: skipped: {task['skipped']}"
    results = task["methods"]
    specs = list(results)
    out = [
        f"{task_name} ({task['description']}), {task['split']} split, "
        f"seeds {task['seeds']}, {task['num_samples']} MC samples:",
        "",
        format_table(results),
    ]
    if "twin" in specs:
        out += [
            "",
            "Paired differences, method minus twin (same seed):",
            "",
            format_table(
                results, "minus_twin", COLUMNS[: len(PAIRED)], sign="+"
            ),
        ]
    if task["split"] == "test":
        out += [
            "",
            f"Split conformal sets, alpha = {ALPHA} (calibrated on the "
            "validation split):",
            "",
            format_table(results, columns=CONFORMAL_COLUMNS),
        ]
    if any(parse_spec(spec)[0] in MC_METHODS for spec in specs):
        out += [
            "",
            "By Monte Carlo samples (the first S of the draws):",
            "",
            format_samples_table(results),
        ]
    if any(result.get("shifts") for result in results.values()):
        for metric in SHIFT_METRICS:
            out += [
                "",
                f"Shift sweep, {metric} (mean over seeds):",
                "",
                format_shift_table(results, metric),
            ]
        if "twin" in specs:
            out += [
                "",
                "Shift sweep, NLL minus twin (mean ± std over seeds):",
                "",
                format_shift_table(
                    results, "nll", "shifts_minus_twin", sign="+"
                ),
                "",
                "Shift sweep, ECE minus twin (mean ± std over seeds):",
                "",
                format_shift_table(
                    results, "ece", "shifts_minus_twin", sign="+"
                ),
                "",
                "NLL minus twin over every shifted test image (all "
                "rotations and noise levels):",
                "",
                format_pooled_table(results),
            ]
    return "\n".join(out)


# Entry point ----------------------------------------------------------------


def parse_args(argv=None):
    parser = harness.parser(__doc__)
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=list(quality_data.TASKS),
        choices=list(quality_data.TASKS),
    )
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_SPECS))
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS)
    )
    parser.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="report on the test split, or tune on the validation split",
    )
    parser.add_argument("--num-samples", type=int, default=30)
    args = harness.parse(parser, argv)
    for spec in args.methods:
        try:
            parse_spec(spec)  # fail early on a typo
        except ValueError as error:
            parser.error(str(error))
    return args


def work(args):
    """All tasks on this worker's backend; JSON-serialisable results."""
    seeds, num_samples = args.seeds, args.num_samples
    if args.quick:
        seeds, num_samples = seeds[:1], QUICK["num_samples"]
    start = time.perf_counter()
    tasks = {}
    for task_name in args.tasks:
        try:
            results = evaluate(
                task_name,
                args.methods,
                seeds,
                split=args.split,
                num_samples=num_samples,
                quick=args.quick,
            )
        except quality_data.DataUnavailable as error:
            tasks[task_name] = {"skipped": str(error)}
            continue
        description = quality_data.TASKS[task_name](seeds[0])["description"]
        tasks[task_name] = {
            "description": description,
            "split": args.split,
            "seeds": seeds,
            "num_samples": num_samples,
            "methods": results,
        }
    return {
        "recipe": RECIPE,
        "tasks": tasks,
        "seconds": time.perf_counter() - start,
    }


def report(results, args):
    out = []
    for backend, result in results.items():
        for task_name, task in result["tasks"].items():
            out += [
                f"\n== backend {backend} ==",
                format_task(task_name, task, args),
            ]
        out.append(f"\n{backend}: done in {result['seconds']:.0f} s")
    return "\n".join(out)


def main(argv=None):
    return harness.main(__file__, parse_args(argv), work, report)


if __name__ == "__main__":
    sys.exit(main())
