"""Calibrate a trained keras.applications model, then give it prediction sets.

No retraining, no Bayesian layers: the two post-hoc tools of
`docs/calibration.md` on a trained MobileNetV3Small.

1. Train a MobileNetV3Small (`weights=None`, logits out) on scikit-learn's
   bundled 8x8 digits, upsampled to 32x32 RGB; split 60 % train, 20 %
   validation, 20 % test.
2. `kb.calibration.TemperatureScaling().fit(val_logits, y_val)`: one
   temperature, fitted on the validation split; the calibrated model is
   `keras.Sequential([model, scaling, keras.layers.Softmax()])`, saved to
   and reloaded from a `.keras` file.
3. `kb.conformal.SplitConformal(score, alpha=0.1)` on the calibrated
   validation probabilities: prediction sets that hold the true digit for
   at least 90 % of exchangeable test images.

Run it with any backend:

    KERAS_BACKEND=jax python examples/calibrate_mobilenet.py
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_bayes as kb  # noqa: E402

SIZE = 32  # the smallest input MobileNetV3Small takes


def load_data(seed):
    """Digits as 32x32 RGB images in [0, 255]: train, val and test."""
    digits = load_digits()
    scale = SIZE // 8
    images = digits.images.repeat(scale, axis=1).repeat(scale, axis=2)
    images = np.repeat(images[..., None] * (255.0 / 16.0), 3, axis=-1)
    images = images.astype("float32")
    x_train, x_rest, y_train, y_rest = train_test_split(
        images, digits.target, test_size=0.4, random_state=seed,
        stratify=digits.target,
    )  # fmt: skip
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest
    )
    return (x_train, y_train), (x_val, y_val), (x_test, y_test)


def build_model(alpha):
    """An untrained MobileNetV3Small for 32x32 images that outputs logits."""
    model = keras.applications.MobileNetV3Small(
        input_shape=(SIZE, SIZE, 3),
        alpha=alpha,
        weights=None,
        classes=10,
        classifier_activation=None,
    )
    # Few training steps: let the batch-norm statistics follow quickly.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


def scores(labels, probs):
    """Accuracy, NLL (nats) and ECE of class probabilities."""
    picked = probs[np.arange(len(labels)), labels]
    return {
        "accuracy": float(np.mean(probs.argmax(axis=-1) == labels)),
        "nll": float(-np.mean(np.log(np.maximum(picked, 1e-12)))),
        "ece": kb.uncertainty.expected_calibration_error(labels, probs),
    }


def main(epochs=15, alpha=0.75, learning_rate=0.005, seed=0, verbose=0):
    """Train, calibrate, build conformal sets; prints and returns results.

    Args:
        epochs: training epochs of the MobileNetV3Small.
        alpha: MobileNetV3Small's width multiplier.
        learning_rate: initial Adam learning rate, cosine-decayed to 0.
        seed: seed of the split and the weights.
        verbose: Keras verbosity of `fit`.

    Returns:
        A dict: `temperature`; `before` and `after`, the test scores of
        the raw and the calibrated model; `sets`, per score, the test
        coverage and average set size at `alpha = 0.1`; `reload_difference`,
        the largest change of the calibrated probabilities through a
        `.keras` save and load.
    """
    start = time.monotonic()
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_data(seed)
    model = build_model(alpha)
    steps = max(1, epochs * -(-len(x_train) // 64))
    model.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(learning_rate, steps)
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=verbose)

    # Temperature scaling, fitted on the validation split only.
    val_logits = model.predict(x_val, batch_size=256, verbose=0)
    scaling = kb.calibration.TemperatureScaling().fit(val_logits, y_val)
    calibrated = keras.Sequential([model, scaling, keras.layers.Softmax()])
    test_logits = model.predict(x_test, batch_size=256, verbose=0)
    raw_probs = np.asarray(keras.ops.convert_to_numpy(
        keras.ops.softmax(test_logits, axis=-1)
    ), dtype="float64")  # fmt: skip
    probs = calibrated.predict(x_test, batch_size=256, verbose=0)
    before, after = scores(y_test, raw_probs), scores(y_test, probs)

    path = os.path.join(tempfile.mkdtemp(), "calibrated.keras")
    calibrated.save(path)
    reloaded = keras.saving.load_model(path)
    reload_difference = float(
        np.max(np.abs(reloaded.predict(x_test, verbose=0) - probs))
    )

    # Conformal sets from the calibrated validation probabilities.
    val_probs = calibrated.predict(x_val, batch_size=256, verbose=0)
    sets = {}
    for score in ("lac", "aps"):
        conformal = kb.conformal.SplitConformal(score=score, alpha=0.1)
        predicted = conformal.fit(val_probs, y_val).predict_sets(probs)
        sets[score] = {
            "coverage": kb.conformal.coverage(predicted, y_test),
            "size": kb.conformal.average_set_size(predicted),
        }

    print(
        f"backend {keras.backend.backend()}: {len(x_train)} train, "
        f"{len(x_val)} validation, {len(x_test)} test digits; fitted "
        f"temperature {scaling.temperature:.3f}"
    )
    print(f"\n{'test digits':<24}{'accuracy':>10}{'NLL':>10}{'ECE':>10}")
    for name, row in (("MobileNetV3Small", before), ("+ temperature", after)):
        print(
            f"{name:<24}{row['accuracy']:>10.4f}{row['nll']:>10.4f}"
            f"{row['ece']:>10.4f}"
        )
    print(f"\n{'sets, alpha = 0.1':<24}{'coverage':>10}{'mean size':>10}")
    for score, row in sets.items():
        print(f"{score:<24}{row['coverage']:>10.4f}{row['size']:>10.2f}")
    print(f"reloaded from .keras: max difference {reload_difference:.2g}")
    print(f"done in {time.monotonic() - start:.0f} s")
    return {
        "temperature": scaling.temperature,
        "before": before,
        "after": after,
        "sets": sets,
        "reload_difference": reload_difference,
    }


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--alpha", type=float, default=0.75)
    parser.add_argument("--learning-rate", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(**vars(_parse_args()))
