"""The methods of the quality benchmark (`benchmarks/quality.py`).

A method trains (or fits) on one task and seed and returns a `Trained`:
its training seconds and a `predict(x)` giving probability samples of
shape `(S, N, classes)` (S = 1 for a single prediction), so that every
method is scored the same way on the test split, the held-out classes and
each shifted copy of the test images.

Methods:

- `twin`: the CNN with `keras.layers`;
- `reparameterization`, `flipout`: the CNN with keras-bayes layers and the
  library defaults (N(0, 1) prior, `kl_weight = 1 / N`);
- `to_bayesian`: `kb.to_bayesian(twin)` (MOPED) and a short fine-tune;
- `ensemble`: a deep ensemble of K twins in one network of
  `kb.layers.BatchedConv*D(..., batch_shape=(K,))` layers, members trained
  side by side and averaged;
- `rank1`: rank-1 Bayesian layers with K members (`kb.layers.Conv*DRank1`,
  `DenseRank1`), skipped with a note where the library has none;
- `recipe`: the recommended Bayesian recipe (`RECIPE`);
- `temperature`: the twin, and `kb.calibration.TemperatureScaling` fitted
  on the validation split (the twin's log-probabilities as logits);
- `laplace`: `kb.laplace.fit(twin, x_train, y_train)` with its defaults,
  predicting with `.predict(x, link="probit")`; reported as unavailable,
  with the reason, where `keras_bayes.laplace` cannot be imported.

A method can carry settings, as `name:key=value,key=value`, e.g.
`flipout:tau=0.1,prior=0.3` (`SETTINGS` lists the keys).
"""

import dataclasses
import importlib
import time

import numpy as np

# keras, keras_bayes and the networks are imported inside the functions
# that train: the harness's parent process parses method specs without
# loading a backend.

METHODS = (
    "twin",
    "reparameterization",
    "flipout",
    "to_bayesian",
    "ensemble",
    "rank1",
    "recipe",
    "temperature",
    "laplace",
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
# The recommended recipe, tuned on the validation split (docs/quality.md).
RECIPE = "to_bayesian:tau=0.1"


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


@dataclasses.dataclass
class Trained:
    """A trained method: `predict(x)` gives probability samples of shape
    `(S, N, classes)`; `seconds` is the wall clock of its training."""

    predict: object
    seconds: float


def _fit(model, task, y_train, epochs, lr, callbacks=()):
    """Adam with cosine decay to 0; returns the wall-clock seconds."""
    import keras
    from quality_models import TRAINING

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
    import keras_bayes as kb

    return kb.uncertainty.mc_predict(
        model, x, num_samples=num_samples, batch_size=512, verbose=0
    )


def _members_first(outputs):
    """(..., N, K, C) outputs as (samples, N, C) with members as samples."""
    outputs = np.moveaxis(outputs, -2, -3)  # (..., K, N, C)
    return outputs.reshape((-1,) + outputs.shape[-2:])


def _twin(task, seed, epochs, lr, twins):
    """The twin of `(task, seed, epochs, lr)`, trained once and shared by
    the methods built on it; returns `(model, seconds)`."""
    import keras
    import quality_models

    key = (task["name"], seed, epochs, lr)
    if key not in twins:
        keras.utils.set_random_seed(seed)
        model = quality_models.twin_model(task)
        twins[key] = (model, _fit(model, task, task["y_train"], epochs, lr))
    return twins[key]


def _single(function):
    """`predict` of a method with one prediction: samples of size 1."""
    return lambda x: np.asarray(function(x), dtype="float64")[None]


def _laplace_module():
    """`keras_bayes.laplace`, or the reason it cannot be imported."""
    try:
        return importlib.import_module("keras_bayes.laplace")
    except ImportError as error:
        return f"unavailable: {type(error).__name__}: {error}"


def run_method(name, settings, task, seed, num_samples, twins):
    """Train one method on one task and seed.

    Returns a `Trained`, or a note (a string) saying why the method was
    skipped.
    """
    import keras
    import quality_models
    from quality_models import TRAINING

    import keras_bayes as kb

    training = TRAINING[task["name"]]
    epochs = int(settings["epochs"] or training["epochs"])
    lr = settings["lr"] or training["lr"]

    if name in ("twin", "to_bayesian", "temperature", "laplace"):
        twin, twin_seconds = _twin(task, seed, epochs, lr, twins)

        def twin_predict(x):
            return twin.predict(x, batch_size=512, verbose=0)

    if name == "twin":
        return Trained(_single(twin_predict), twin_seconds)

    if name == "temperature":
        start = time.perf_counter()
        logits = kb.calibration.logits_from_probabilities
        scaling = kb.calibration.TemperatureScaling(output_mode="probabilities")
        scaling.fit(logits(twin_predict(task["x_val"])), task["y_val"])
        seconds = time.perf_counter() - start

        def predict(x):
            calibrated = scaling(logits(twin_predict(x)).astype("float32"))
            return keras.ops.convert_to_numpy(calibrated)

        return Trained(_single(predict), twin_seconds + seconds)

    if name == "laplace":
        module = _laplace_module()
        if isinstance(module, str):
            return module
        start = time.perf_counter()
        try:
            posterior = module.fit(twin, task["x_train"], task["y_train"])
        except (ValueError, TypeError, NotImplementedError) as error:
            # Reported in the table rather than ending the whole run.
            return f"failed: {type(error).__name__}: {error}"
        seconds = time.perf_counter() - start

        def predict(x):
            probs = posterior.predict(x, link="probit")
            return keras.ops.convert_to_numpy(probs)

        return Trained(_single(predict), twin_seconds + seconds)

    keras.utils.set_random_seed(seed)
    if name == "to_bayesian":
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
        return Trained(
            lambda x: _mc(model, x, num_samples), twin_seconds + seconds
        )

    if name in ("ensemble", "rank1"):
        members = int(settings["members"])
        if name == "rank1":
            if not quality_models.rank1_available():
                return "no rank-1 layers in this keras_bayes"
            model = quality_models.rank1_model(task, settings)
        else:
            model = quality_models.ensemble_model(task, members)
        # Every member is trained on every example: labels per member.
        y_members = np.repeat(task["y_train"][:, None], members, axis=1)
        seconds = _fit(model, task, y_members, epochs, lr)
        samples = num_samples if name == "rank1" else 1
        return Trained(
            lambda x: _members_first(_mc(model, x, samples)), seconds
        )

    estimator = {
        "reparameterization": "Reparameterization",
        "flipout": "Flipout",
    }[name]
    model = quality_models.bayesian_model(task, estimator, settings)
    callbacks = []
    if settings["warmup"] > 0:
        warmup = settings["warmup"]
        callbacks.append(
            kb.callbacks.KLWeightScheduler(
                lambda epoch: min(1.0, (epoch + 1) / warmup)
            )
        )
    seconds = _fit(model, task, task["y_train"], epochs, lr, callbacks)
    return Trained(lambda x: _mc(model, x, num_samples), seconds)
