"""Convert a keras.applications MobileNetV3Small into a Bayesian network.

The usual path to a Bayesian network: take an architecture people use,
trained, and convert it. So that the script runs offline in a few minutes,
it trains the MobileNetV3Small itself (`weights=None`) on scikit-learn's
bundled 8x8 digits, upsampled to 32x32 RGB; with ImageNet weights, the
first step is loading them instead.

Then `kb.to_bayesian` makes every convolution and dense layer a Flipout
layer centred on the trained kernels (MOPED, scale `moped_delta * |w|`),
copies batch normalization and the rest with their weights, and the script
checks that in mean mode the copy computes what the original does. A few
epochs of variational fine-tuning follow; a table compares accuracy,
negative log-likelihood (NLL) and expected calibration error (ECE) of the
original network and of the Bayesian one's Monte Carlo predictive.

Run it with any backend:

    KERAS_BACKEND=jax python examples/convert_mobilenet.py
"""

import argparse
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_bayes as kb  # noqa: E402

SIZE = 32  # the smallest input MobileNetV3Small takes
# Mean mode must reproduce the original's probabilities; float32 round-off
# of identical operations is far below this.
MEAN_MODE_TOLERANCE = 1e-5


def load_data(seed, test_fraction):
    """Digits as (N, 32, 32, 3) images in [0, 255], split stratified."""
    digits = load_digits()
    scale = SIZE // 8
    images = digits.images.repeat(scale, axis=1).repeat(scale, axis=2)
    images = np.repeat(images[..., None] * (255.0 / 16.0), 3, axis=-1)
    return train_test_split(
        images.astype("float32"),
        digits.target,
        test_size=test_fraction,
        random_state=seed,
        stratify=digits.target,
    )


def build_mobilenet(alpha, num_classes=10):
    """An untrained keras.applications MobileNetV3Small for 32x32 images."""
    model = keras.applications.MobileNetV3Small(
        input_shape=(SIZE, SIZE, 3),
        alpha=alpha,
        weights=None,
        classes=num_classes,
        dropout_rate=0.1,
    )
    # Keras' default batch-norm momentum (0.999) suits ImageNet's thousands
    # of steps; a few hundred steps need the moving statistics to follow.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


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
    epochs=12,
    finetune_epochs=3,
    num_samples=20,
    batch_size=64,
    learning_rate=0.005,
    finetune_learning_rate=0.0005,
    moped_delta=0.05,
    alpha=0.75,
    seed=0,
    test_fraction=0.2,
    verbose=1,
):
    """Train, convert, fine-tune and print the results; returns them.

    Args:
        epochs: training epochs of the plain MobileNetV3Small.
        finetune_epochs: variational fine-tuning epochs after conversion.
        num_samples: Monte Carlo samples of the weights at prediction.
        batch_size: training batch size.
        learning_rate: initial Adam learning rate of the plain training,
            decayed to 0 along a cosine.
        finetune_learning_rate: the same for fine-tuning.
        moped_delta: relative posterior scale of the converted kernels.
        alpha: MobileNetV3Small's width multiplier.
        seed: seed of the split and the weights.
        test_fraction: fraction of the digits held out for testing.
        verbose: Keras verbosity of `fit` (0, 1 or 2).

    Returns:
        A dict with `before` and `after`, each a dict of `accuracy`, `nll`
        and `ece` on the test digits; `mean_mode_max_difference`, the
        largest difference between the converted model in mean mode and
        the original; `bayesian_layers`, the number of converted layers;
        and `unconverted_warning`, the conversion's warning about layers
        left deterministic, or None.
    """
    start = time.monotonic()
    keras.utils.set_random_seed(seed)
    x_train, x_test, y_train, y_test = load_data(seed, test_fraction)
    num_train = len(x_train)
    print(
        f"backend {keras.backend.backend()}: {num_train} training and "
        f"{len(x_test)} test digits at {SIZE}x{SIZE}"
    )

    plain = build_mobilenet(alpha)
    _fit(plain, x_train, y_train, epochs, batch_size, learning_rate, verbose)
    plain_probs = plain.predict(x_test, batch_size=512, verbose=0)
    before = metrics(y_test, plain_probs)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bayesian = kb.to_bayesian(
            plain,
            estimator="flipout",
            moped_delta=moped_delta,
            kl_weight=1.0 / num_train,
            seed=seed,
        )
    unconverted = [
        str(w.message) for w in caught if "deterministic" in str(w.message)
    ]
    if unconverted:
        print(unconverted[0].splitlines()[0])
    count = len(kb.workflows.bayesian_layers(bayesian))
    print(f"{count} layers are Bayesian")

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

    print(f"\n{'test digits':<28}{'accuracy':>10}{'NLL':>10}{'ECE':>10}")
    rows = (
        ("MobileNetV3Small", before),
        (f"Bayesian, {num_samples} samples", after),
    )
    for name, row in rows:
        print(
            f"{name:<28}{row['accuracy']:>10.4f}{row['nll']:>10.4f}"
            f"{row['ece']:>10.4f}"
        )
    print(f"done in {time.monotonic() - start:.0f} s")
    return {
        "before": before,
        "after": after,
        "mean_mode_max_difference": difference,
        "bayesian_layers": count,
        "unconverted_warning": unconverted[0] if unconverted else None,
    }


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument(
        "--num-samples",
        type=int,
        default=20,
        help="Monte Carlo weight samples at prediction",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.005)
    parser.add_argument("--finetune-learning-rate", type=float, default=0.0005)
    parser.add_argument("--moped-delta", type=float, default=0.05)
    parser.add_argument("--alpha", type=float, default=0.75)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(**vars(_parse_args()))
