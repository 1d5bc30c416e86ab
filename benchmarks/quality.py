"""Predictive quality: Bayesian CNNs against their deterministic twin.

On real data sets that ship inside Python packages (see `quality_data.py`:
scikit-learn's digits and the UCR/UEA JapaneseVowels from aeon's wheel),
trains the same small CNN several ways, with the same optimizer, schedule,
batch size and number of epochs, and reports on the test split:

- accuracy, negative log-likelihood (NLL, nats), expected calibration
  error (ECE, 15 bins) and Brier score of the predictive distribution;
- out-of-distribution AUROC: how well the predictive entropy, and the
  mutual information (the epistemic part), rank the held-out classes'
  examples above the test examples (0.5 = chance, 1 = perfect);
- training time (wall clock of `fit`; for `to_bayesian`, the twin's
  training plus the fine-tune).

Methods (columns of the table):

- `twin`: the CNN with `keras.layers`;
- `reparameterization`, `flipout`: the CNN with keras-bayes layers and the
  library defaults (N(0, 1) prior, `kl_weight = 1 / N`);
- `to_bayesian`: `kb.to_bayesian(twin)` (MOPED) and a short fine-tune;
- `ensemble`: a deep ensemble of K twins in one network of
  `kb.layers.BatchedConv*D(..., batch_shape=(K,))` layers, members trained
  side by side and averaged;
- `rank1`: rank-1 Bayesian layers with K members (`kb.layers.Conv*DRank1`,
  `DenseRank1`), skipped with a note where the library has none;
- `recipe`: the recommended Bayesian recipe (`RECIPE`), tuned on the
  validation split (`--split val`) only.

A method can carry settings, as `name:key=value,key=value`, e.g.
`flipout:tau=0.1,prior=0.3` (`SETTINGS` lists the keys). Bayesian models
predict with `--num-samples` Monte Carlo weight samples.

Usage:
    python benchmarks/quality.py                    # the full table
    python benchmarks/quality.py --quick            # smoke run, seconds
    python benchmarks/quality.py --tasks vowels --split val \\
        --methods twin flipout:tau=0.1 flipout:tau=0.3 --seeds 0 1 2
    python benchmarks/quality.py --json quality.json
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tiny models: threads cost more than they save on a shared CPU.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quality_data  # noqa: E402

import keras_bayes as kb  # noqa: E402

METHODS = (
    "twin",
    "reparameterization",
    "flipout",
    "to_bayesian",
    "ensemble",
    "rank1",
    "recipe",
)
# The default table: every method, and Flipout trained from scratch with
# the KL tempered (`kl_weight = tau / N`).
DEFAULT_SPECS = METHODS + ("flipout:tau=0.1", "flipout:tau=0.03")
# Settings a method spec may override, with their defaults.
SETTINGS = {
    "tau": 1.0,  # kl_weight = tau / num_train
    "prior": 1.0,  # scale of the N(0, prior) kernel prior
    "init": -3.0,  # mean of the untransformed posterior scale at init
    "loc_init": "default",  # posterior loc initializer: "default", "glorot"
    "warmup": 0,  # epochs of linear KL warm-up (KLWeightScheduler)
    "epochs": None,  # training epochs (default: the task's)
    "lr": None,  # peak learning rate (default: the task's)
    "finetune": 0.25,  # to_bayesian: fine-tune epochs / training epochs
    "finetune_lr": 0.1,  # to_bayesian: fine-tune rate / training rate
    "moped": 0.1,  # to_bayesian: posterior scale / |w|
    "members": 4,  # ensemble, rank1: number of members
}
# Methods whose predictions are Monte Carlo weight samples.
MC_METHODS = ("reparameterization", "flipout", "to_bayesian")
SAMPLE_COUNTS = (1, 3, 10)
PAIRED = ("accuracy", "nll", "ece", "brier", "auroc_entropy")
# The recommended recipe, tuned on the validation split (docs/quality.md).
RECIPE = "to_bayesian:tau=0.1"
# Per task: epochs, batch size, peak Adam learning rate (cosine decay to 0),
# conv filters. Fixed before any measurement (digits: as `make demo`).
TRAINING = {
    "digits": {"epochs": 40, "batch_size": 64, "lr": 1e-2, "filters": (16, 32)},
    "vowels": {"epochs": 60, "batch_size": 32, "lr": 3e-3, "filters": (32, 32)},
}
QUICK = {"epochs": 2, "num_samples": 3}


def parse_spec(spec):
    """`"flipout:tau=0.1,prior=0.3"` as `("flipout", {settings})`.

    `"recipe"` is `RECIPE`: its method and settings (more settings may
    follow, `"recipe:tau=0.3"`).
    """
    name, _, options = spec.partition(":")
    if name not in METHODS:
        raise ValueError(
            f"Unknown method {name!r}; expected one of {METHODS}. "
            f"Received: spec={spec!r}"
        )
    settings = dict(SETTINGS)
    if name == "recipe":
        name, settings = parse_spec(RECIPE)
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if key not in SETTINGS:
            raise ValueError(
                f"Unknown setting {key!r}; expected one of "
                f"{sorted(SETTINGS)}. Received: spec={spec!r}"
            )
        settings[key] = value if key == "loc_init" else float(value)
    return name, settings


# Networks ---------------------------------------------------------------


def _conv_stack(task, conv, pool, head, members=None):
    """conv-pool-conv-pool-flatten-dense, built from layer factories."""
    shape = task["x_train"].shape[1:]
    first, second = TRAINING[task["name"]]["filters"]
    layers = [keras.Input(shape=shape), conv(first), pool(), conv(second)]
    layers.append(pool())
    if members is None:
        layers.append(keras.layers.Flatten())
    else:
        layers.append(keras.layers.Reshape((members, -1)))
    layers += head(task["num_classes"])
    return keras.Sequential(layers)


def _pool(rank):
    return lambda: getattr(keras.layers, f"MaxPooling{rank}D")(2)


def twin_model(task):
    rank = task["rank"]
    conv_class = getattr(keras.layers, f"Conv{rank}D")
    return _conv_stack(
        task,
        lambda filters: conv_class(
            filters, 3, padding="same", activation="relu"
        ),
        _pool(rank),
        lambda classes: [keras.layers.Dense(classes, activation="softmax")],
    )


def bayesian_model(task, estimator, settings):
    """The twin's network with keras-bayes layers of one estimator."""
    rank = task["rank"]
    num_train = len(task["x_train"])
    if settings["loc_init"] == "glorot":
        loc_initializer = "glorot_uniform"
    elif settings["loc_init"] == "default":
        loc_initializer = None
    else:
        raise ValueError(
            "Expected loc_init 'default' or 'glorot'. "
            f"Received: loc_init={settings['loc_init']!r}"
        )

    def bayesian_args():
        return {
            "kernel_posterior": kb.posteriors.MeanFieldNormal(
                loc_initializer=loc_initializer,
                untransformed_scale_initializer=(
                    keras.initializers.RandomNormal(settings["init"], 0.1)
                ),
            ),
            "kernel_prior": kb.priors.Normal(0.0, settings["prior"]),
            "kl_weight": settings["tau"] / num_train,
        }

    conv_class = getattr(kb.layers, f"Conv{rank}D{estimator}")
    dense_class = getattr(kb.layers, f"Dense{estimator}")
    return _conv_stack(
        task,
        lambda filters: conv_class(
            filters, 3, padding="same", activation="relu", **bayesian_args()
        ),
        _pool(rank),
        lambda classes: [
            dense_class(classes, activation="softmax", **bayesian_args())
        ],
    )


def _member_pool(rank):
    # Member outputs are (N, K, *spatial, C): pool the spatial axes only.
    pool_class = getattr(keras.layers, f"MaxPooling{rank + 1}D")
    return lambda: pool_class((1,) + (2,) * rank)


def ensemble_model(task, members):
    """K twins side by side: batched convolutions, outputs (N, K, classes)."""
    rank = task["rank"]
    conv_class = getattr(kb.layers, f"BatchedConv{rank}D")

    def head(classes):
        # A dense layer per member: a 1x1 batched convolution over a
        # length-1 axis.
        return [
            keras.layers.Reshape((members, 1, -1)),
            kb.layers.BatchedConv1D(classes, 1, batch_shape=(members,)),
            keras.layers.Reshape((members, classes)),
            keras.layers.Softmax(),
        ]

    return _conv_stack(
        task,
        lambda filters: conv_class(
            filters,
            3,
            padding="same",
            activation="relu",
            batch_shape=(members,),
        ),
        _member_pool(rank),
        head,
        members=members,
    )


def rank1_available():
    return hasattr(kb.layers, "Conv2DRank1") and hasattr(
        kb.layers, "DenseRank1"
    )


def rank1_model(task, settings):
    """Rank-1 layers with K members; outputs (N, K, classes)."""
    rank = task["rank"]
    members = int(settings["members"])
    kl_weight = settings["tau"] / len(task["x_train"])
    conv_class = getattr(kb.layers, f"Conv{rank}DRank1")
    return _conv_stack(
        task,
        lambda filters: conv_class(
            filters,
            3,
            padding="same",
            activation="relu",
            batch_shape=(members,),
            kl_weight=kl_weight,
        ),
        _member_pool(rank),
        lambda classes: [
            kb.layers.DenseRank1(
                classes,
                activation="softmax",
                batch_shape=(members,),
                kl_weight=kl_weight,
            )
        ],
        members=members,
    )


# Training and prediction -------------------------------------------------


def _fit(model, task, y_train, epochs, lr, callbacks=()):
    """Adam with cosine decay to 0; returns the wall-clock seconds."""
    batch_size = TRAINING[task["name"]]["batch_size"]
    steps = max(1, epochs * -(-len(y_train) // batch_size))
    model.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(lr, steps)
        ),
        loss="sparse_categorical_crossentropy",
    )
    start = time.perf_counter()
    model.fit(
        task["x_train"],
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        callbacks=list(callbacks),
        verbose=0,
    )
    return time.perf_counter() - start


def _mc(model, x, num_samples):
    return kb.uncertainty.mc_predict(
        model, x, num_samples=num_samples, batch_size=512, verbose=0
    )


def _members_first(outputs):
    """(..., N, K, C) outputs as (samples, N, C) with members as samples."""
    outputs = np.moveaxis(outputs, -2, -3)  # (..., K, N, C)
    return outputs.reshape((-1,) + outputs.shape[-2:])


def run_method(name, settings, task, seed, num_samples, twins):
    """Train one method on one task and seed.

    Returns `(test_samples, ood_samples, train_seconds)` with samples of
    shape `(S, N, classes)` (S = 1 for the twin), or a skip note string.
    """
    training = TRAINING[task["name"]]
    epochs = int(settings["epochs"] or training["epochs"])
    lr = settings["lr"] or training["lr"]
    x_test, x_ood = task["x_test"], task["x_ood"]
    keras.utils.set_random_seed(seed)

    if name in ("twin", "to_bayesian"):
        if (task["name"], seed, epochs, lr) not in twins:
            model = twin_model(task)
            seconds = _fit(model, task, task["y_train"], epochs, lr)
            twins[task["name"], seed, epochs, lr] = (model, seconds)
        twin, twin_seconds = twins[task["name"], seed, epochs, lr]
        if name == "twin":
            predict = lambda x: twin.predict(x, batch_size=512, verbose=0)  # noqa: E731
            return predict(x_test)[None], predict(x_ood)[None], twin_seconds
        keras.utils.set_random_seed(seed)
        model = kb.to_bayesian(
            twin,
            moped_delta=settings["moped"],
            prior=kb.priors.Normal(0.0, settings["prior"]),
            kl_weight=settings["tau"] / len(task["x_train"]),
            seed=seed,
        )
        finetune_epochs = max(1, round(settings["finetune"] * epochs))
        seconds = _fit(
            model,
            task,
            task["y_train"],
            finetune_epochs,
            lr * settings["finetune_lr"],
        )
        return (
            _mc(model, x_test, num_samples),
            _mc(model, x_ood, num_samples),
            twin_seconds + seconds,
        )

    if name in ("ensemble", "rank1"):
        members = int(settings["members"])
        if name == "rank1":
            if not rank1_available():
                return "no rank-1 layers in this keras_bayes"
            model = rank1_model(task, settings)
        else:
            model = ensemble_model(task, members)
        # Every member is trained on every example: labels per member.
        y_members = np.repeat(task["y_train"][:, None], members, axis=1)
        seconds = _fit(model, task, y_members, epochs, lr)
        samples = num_samples if name == "rank1" else 1
        return (
            _members_first(_mc(model, x_test, samples)),
            _members_first(_mc(model, x_ood, samples)),
            seconds,
        )

    estimator = {
        "reparameterization": "Reparameterization",
        "flipout": "Flipout",
    }[name]
    model = bayesian_model(task, estimator, settings)
    callbacks = []
    if settings["warmup"] > 0:
        warmup = settings["warmup"]
        callbacks.append(
            kb.callbacks.KLWeightScheduler(
                lambda epoch: min(1.0, (epoch + 1) / warmup)
            )
        )
    seconds = _fit(model, task, task["y_train"], epochs, lr, callbacks)
    return (
        _mc(model, x_test, num_samples),
        _mc(model, x_ood, num_samples),
        (seconds),
    )


# Metrics ------------------------------------------------------------------


def _auroc(in_scores, out_scores):
    """AUROC of ranking OOD examples above test examples by a score."""
    labels = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    return float(roc_auc_score(labels, np.r_[in_scores, out_scores]))


def metrics(test_samples, labels, ood_samples):
    """Scores of Monte Carlo (or member) predictions, shape (S, N, C)."""
    probs = test_samples.mean(axis=0)
    num_classes = probs.shape[-1]
    picked = probs[np.arange(len(labels)), labels]
    one_hot = np.eye(num_classes)[labels]
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


def evaluate(
    task_name, specs, seeds, split="test", num_samples=30, quick=False
):
    """Every method on every seed; returns a result dict per method.

    Each result holds `runs` (one dict of metrics per seed) and, for every
    metric, `mean` and `std` over seeds (`None` where undefined), or a
    `skipped` note.
    """
    twins = {}
    results = {spec: {"runs": []} for spec in specs}
    for seed in seeds:
        task = quality_data.TASKS[task_name](seed)
        if split == "val":
            # Tune on the validation split: the test split is never seen.
            task["x_test"], task["y_test"] = task["x_val"], task["y_val"]
        for spec in specs:
            name, settings = parse_spec(spec)
            if quick:
                settings["epochs"] = QUICK["epochs"]
            out = run_method(name, settings, task, seed, num_samples, twins)
            if isinstance(out, str):
                results[spec] = {"skipped": out}
                continue
            test_samples, ood_samples, seconds = out
            run = metrics(test_samples, task["y_test"], ood_samples)
            run.update(
                seed=seed,
                train_seconds=seconds,
                num_samples=len(test_samples),
            )
            if name in MC_METHODS:
                # The same draws, fewer of them: what S samples give.
                run["by_samples"] = {
                    str(s): metrics(
                        test_samples[:s], task["y_test"], ood_samples[:s]
                    )
                    for s in SAMPLE_COUNTS
                    if s < len(test_samples)
                }
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
    twin_runs = {
        run["seed"]: run for run in results.get("twin", {}).get("runs", [])
    }
    for result in results.values():
        runs = result.get("runs")
        if not runs:
            continue
        result.update(_spread(runs))
        if "by_samples" in runs[0]:
            result["by_samples"] = {
                count: _spread([run["by_samples"][count] for run in runs])
                for count in runs[0]["by_samples"]
            }
        if twin_runs:
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
    return results


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=list(quality_data.TASKS),
        choices=list(quality_data.TASKS),
    )
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_SPECS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="report on the test split, or tune on the validation split",
    )
    parser.add_argument("--num-samples", type=int, default=30)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 seed, 2 epochs"
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    for spec in args.methods:
        parse_spec(spec)  # fail early on a typo
    seeds, num_samples = args.seeds, args.num_samples
    if args.quick:
        seeds, num_samples = seeds[:1], QUICK["num_samples"]

    report = {
        "backend": keras.backend.backend(),
        "split": args.split,
        "seeds": seeds,
        "num_samples": num_samples,
        "recipe": RECIPE,
        "tasks": {},
    }
    start = time.perf_counter()
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
            print(f"\n{task_name}: skipped: {error}")
            report["tasks"][task_name] = {"skipped": str(error)}
            continue
        description = quality_data.TASKS[task_name](seeds[0])["description"]
        report["tasks"][task_name] = {
            "description": description,
            "methods": results,
        }
        print(
            f"\n{task_name} ({description}), {args.split} split, "
            f"seeds {seeds}, {num_samples} MC samples, "
            f"backend {keras.backend.backend()}:\n"
        )
        print(format_table(results), flush=True)
        if "twin" in args.methods:
            print("\nPaired differences, method minus twin (same seed):\n")
            print(
                format_table(
                    results, "minus_twin", COLUMNS[: len(PAIRED)], sign="+"
                )
            )
        if any(parse_spec(spec)[0] in MC_METHODS for spec in args.methods):
            print("\nBy Monte Carlo samples (the first S of the draws):\n")
            print(format_samples_table(results), flush=True)
        _write_json(args.json, report)  # a long run keeps what it has
    report["seconds"] = time.perf_counter() - start
    print(f"\ndone in {report['seconds']:.0f} s")
    _write_json(args.json, report)
    return report


def _write_json(path, report):
    if path:
        with open(path, "w") as out:
            json.dump(report, out, indent=1)


if __name__ == "__main__":
    main()
