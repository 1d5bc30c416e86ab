"""Turn a trained plain Keras CNN into a Bayesian one and fine-tune it.

Trains an ordinary CNN (`keras.layers.Conv2D`, `Dense`) on the 8x8 digits of
`sklearn.datasets.load_digits`, then converts it with `kb.to_bayesian`:
every convolution and dense layer becomes a Flipout layer whose posterior
mean is the trained kernel and whose scale is `moped_delta * |w|` (MOPED).
In mean mode the converted model computes exactly what the original does,
which the script checks. A few epochs of variational fine-tuning follow,
and a table compares accuracy, negative log-likelihood (NLL) and expected
calibration error (ECE) before (deterministic) and after (Monte Carlo
predictive).

Run it with any backend:

    KERAS_BACKEND=tensorflow python examples/convert_pretrained_cnn.py
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A tiny model: one thread per process is faster than several on a shared
# CPU (see digits_bayesian_cnn.py).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_bayes as kb  # noqa: E402

# Mean mode must reproduce the original's softmax outputs; float32
# round-off of identical ops is far below this.
MEAN_MODE_TOLERANCE = 1e-5


def load_data(seed, test_fraction):
    """Digits as (N, 8, 8, 1) images in [0, 1], split with stratification."""
    digits = load_digits()
    images = (digits.images / 16.0).astype("float32")[..., None]
    return train_test_split(
        images,
        digits.target,
        test_size=test_fraction,
        random_state=seed,
        stratify=digits.target,
    )


def build_plain_model(num_classes=10):
    """An ordinary (deterministic) Keras CNN."""
    return keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes, activation="softmax"),
        ],
        name="plain_digits_cnn",
    )


def metrics(labels, probs):
    """Accuracy, NLL (nats) and ECE of class probabilities."""
    picked = probs[np.arange(len(labels)), labels]
    return {
        "accuracy": float(np.mean(probs.argmax(axis=-1) == labels)),
        "nll": float(-np.mean(np.log(np.maximum(picked, 1e-12)))),
        "ece": kb.uncertainty.expected_calibration_error(labels, probs),
    }


def _fit(model, x, y, epochs, batch_size, learning_rate, verbose):
    steps = max(1, epochs * -(-len(x) // batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose)


def main(
    epochs=30,
    finetune_epochs=5,
    num_samples=30,
    batch_size=64,
    learning_rate=0.01,
    finetune_learning_rate=0.001,
    moped_delta=0.1,
    seed=0,
    test_fraction=0.2,
    verbose=1,
):
    """Train, convert, fine-tune and print the results; returns them.

    Args:
        epochs: training epochs of the plain CNN.
        finetune_epochs: variational fine-tuning epochs after conversion.
        num_samples: Monte Carlo samples of the weights at prediction.
        batch_size: training batch size.
        learning_rate: initial Adam learning rate of the plain training,
            decayed to 0 along a cosine.
        finetune_learning_rate: the same for fine-tuning.
        moped_delta: relative posterior scale of the converted kernels.
        seed: seed of the split and the weights.
        test_fraction: fraction of the digits held out for testing.
        verbose: Keras verbosity of `fit` (0, 1 or 2).

    Returns:
        A dict with `before` and `after`, each a dict of `accuracy`, `nll`
        and `ece` on the test digits, and `mean_mode_max_difference`, the
        largest difference between the converted model in mean mode and
        the original.
    """
    start = time.monotonic()
    keras.utils.set_random_seed(seed)
    x_train, x_test, y_train, y_test = load_data(seed, test_fraction)
    num_train = len(x_train)
    print(
        f"backend {keras.backend.backend()}: {num_train} training and "
        f"{len(x_test)} test digits"
    )

    plain = build_plain_model()
    _fit(plain, x_train, y_train, epochs, batch_size, learning_rate, verbose)
    plain_probs = plain.predict(x_test, batch_size=512, verbose=0)
    before = metrics(y_test, plain_probs)

    bayesian = kb.to_bayesian(
        plain,
        estimator="flipout",
        moped_delta=moped_delta,
        kl_weight=1.0 / num_train,
        seed=seed,
    )
    kb.set_posterior_value(bayesian, "mean")
    mean_probs = bayesian.predict(x_test, batch_size=512, verbose=0)
    difference = float(np.max(np.abs(mean_probs - plain_probs)))
    if difference > MEAN_MODE_TOLERANCE:
        raise RuntimeError(
            "The converted model in mean mode differs from the original by "
            f"{difference:.3g} > {MEAN_MODE_TOLERANCE}."
        )
    print(f"mean mode equals the original (max difference {difference:.2g})")
    kb.set_posterior_value(bayesian, "sample")

    _fit(
        bayesian,
        x_train,
        y_train,
        finetune_epochs,
        batch_size,
        finetune_learning_rate,
        verbose,
    )
    samples = kb.uncertainty.mc_predict(
        bayesian, x_test, num_samples=num_samples, batch_size=512, verbose=0
    )
    after = metrics(y_test, samples.mean(axis=0))

    print(f"\n{'test digits':<24}{'accuracy':>10}{'NLL':>10}{'ECE':>10}")
    rows = (
        ("plain CNN", before),
        (f"Bayesian, {num_samples} samples", after),
    )
    for name, row in rows:
        print(
            f"{name:<24}{row['accuracy']:>10.4f}{row['nll']:>10.4f}"
            f"{row['ece']:>10.4f}"
        )
    print(f"done in {time.monotonic() - start:.0f} s")
    return {
        "before": before,
        "after": after,
        "mean_mode_max_difference": difference,
    }


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument(
        "--num-samples",
        type=int,
        default=30,
        help="Monte Carlo weight samples at prediction",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--finetune-learning-rate", type=float, default=0.001)
    parser.add_argument("--moped-delta", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(**vars(_parse_args()))
