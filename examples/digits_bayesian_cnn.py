"""A Bayesian CNN on scikit-learn's handwritten digits, on any Keras backend.

Trains a small CNN twice on the 8x8 digits of `sklearn.datasets.load_digits`
(shipped with scikit-learn, no download) and compares the two:

1. the deterministic twin: the CNN with `keras.layers`, trained normally;
2. the Bayesian CNN, by the recipe of `docs/quality.md`: `kb.to_bayesian`
   turns the trained twin into Flipout layers (MOPED: posterior means at
   the trained weights, scales 0.1 |w|), with the KL tempered to
   `kl_weight = 0.1 / N`, and `model.fit` fine-tunes it briefly;
3. last-layer Laplace on the trained twin (`kb.laplace.fit`, no
   retraining, every setting fitted from the data: docs/laplace.md),
   predicting with the probit approximation.

It then predicts with Monte Carlo samples of the weights and prints, for
the three side by side:

- accuracy and negative log-likelihood (NLL) on held-out digits;
- the expected calibration error (ECE);
- the mean predictive entropy on the test digits and on random-noise
  images, which neither model has seen, and how well the entropy tells
  the two apart (AUROC);
- for the Bayesian CNN, the mutual information (the epistemic part, the
  disagreement between weight samples; a deterministic network has none).

Run it with any backend:

    KERAS_BACKEND=jax python examples/digits_bayesian_cnn.py --epochs 40
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The model is tiny: splitting its ops over threads costs more than it saves,
# and busy-waiting worker threads slow a shared CPU down severalfold (PyTorch
# on 2 cores: 21 s with one thread, over 2 minutes with two).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_bayes as kb  # noqa: E402


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


def build_twin(num_classes=10):
    """The deterministic twin: the same CNN with `keras.layers`."""
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
        name="digits_cnn",
    )


def build_model(num_train, num_classes=10):
    """Two Flipout convolutions and a Flipout softmax head, from scratch.

    The twin's network with Flipout layers (the demo itself builds its
    Bayesian CNN from the trained twin with `kb.to_bayesian`).

    `kl_weight = 1 / num_train` makes the loss `fit` minimises the negative
    ELBO per training example: the mean cross-entropy of a batch plus the
    KL divergence of the whole weight posterior spread over the data set.
    """
    kl_weight = 1.0 / num_train
    return keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1)),
            kb.layers.Conv2DFlipout(
                16, 3, padding="same", activation="relu", kl_weight=kl_weight
            ),
            keras.layers.MaxPooling2D(),
            kb.layers.Conv2DFlipout(
                32, 3, padding="same", activation="relu", kl_weight=kl_weight
            ),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            kb.layers.DenseFlipout(
                num_classes, activation="softmax", kl_weight=kl_weight
            ),
        ],
        name="bayesian_digits_cnn",
    )


def train(model, x, y, epochs, batch_size, learning_rate, verbose):
    """Adam, the learning rate decayed to 0 along a cosine."""
    steps = max(1, epochs * -(-len(x) // batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose)


def summarize(digit_samples, noise_samples, labels):
    """Metrics of predictions, shape `(samples, N, classes)` (1 sample for
    the deterministic twin)."""
    uncertainty = kb.uncertainty
    probs = digit_samples.mean(axis=0)
    picked = probs[np.arange(len(labels)), labels]
    entropy_digits = uncertainty.predictive_entropy(digit_samples)
    entropy_noise = uncertainty.predictive_entropy(noise_samples)
    # AUROC: the chance that a noise image is less certain than a digit.
    above = entropy_noise[None, :] > entropy_digits[:, None]
    ties = entropy_noise[None, :] == entropy_digits[:, None]
    results = {
        "accuracy": float(np.mean(probs.argmax(axis=-1) == labels)),
        "nll": float(-np.mean(np.log(np.maximum(picked, 1e-12)))),
        "ece": uncertainty.expected_calibration_error(labels, probs),
        "entropy_digits": float(entropy_digits.mean()),
        "entropy_noise": float(entropy_noise.mean()),
        "auroc_noise": float(np.mean(above + 0.5 * ties)),
    }
    if len(digit_samples) > 1:
        results["mutual_information_digits"] = float(
            uncertainty.mutual_information(digit_samples).mean()
        )
        results["mutual_information_noise"] = float(
            uncertainty.mutual_information(noise_samples).mean()
        )
    return results


def _print_table(bayesian, twin, laplace, num_samples):
    def row(label, key, digits=4):
        if key not in bayesian:
            return
        cells = [
            f"{column[key]:.{digits}f}" if key in column else "-"
            for column in (twin, laplace)
        ]
        print(
            f"  {label:<28}{bayesian[key]:.{digits}f}    {cells[0]:>6}"
            f"  {cells[1]:>7}"
        )

    print(f"\n{'':30}Bayesian  twin    Laplace")
    print(f"held-out digits ({num_samples} weight samples for Bayesian):")
    row("test accuracy", "accuracy")
    row("test NLL (nats)", "nll")
    row("expected calibration error", "ece")
    print(f"mean predictive entropy (max log 10 = {np.log(10):.3f} nats):")
    row("test digits", "entropy_digits")
    row("random-noise images", "entropy_noise")
    row("AUROC noise vs digits", "auroc_noise")
    print("mean mutual information (epistemic part):")
    row("test digits", "mutual_information_digits")
    row("random-noise images", "mutual_information_noise")


def main(
    epochs=40,
    finetune_epochs=None,
    num_samples=30,
    batch_size=64,
    learning_rate=0.01,
    kl_tempering=0.1,
    seed=0,
    test_fraction=0.2,
    verbose=1,
):
    """Train both models, evaluate and print them; returns the results.

    Args:
        epochs: training epochs of the deterministic twin.
        finetune_epochs: fine-tuning epochs of the Bayesian CNN. Defaults
            to `epochs // 4` (at least 1).
        num_samples: Monte Carlo samples of the weights at prediction.
        batch_size: training batch size.
        learning_rate: initial Adam learning rate of the twin, decayed to
            0 along a cosine; the fine-tune starts at a tenth of it.
        kl_tempering: `tau` in `kl_weight = tau / num_train`: 1 is the
            ELBO, smaller values weigh the KL less (see
            `docs/quality.md`).
        seed: seed of the split, the weights, the noise and the images.
        test_fraction: fraction of the digits held out for testing.
        verbose: Keras verbosity of `fit` (0, 1 or 2).

    Returns:
        A dict with the Bayesian CNN's `accuracy`, `nll`, `ece` (test
        digits), `entropy_digits`, `entropy_noise`,
        `mutual_information_digits`, `mutual_information_noise` (means
        over images, in nats), `auroc_noise` (noise vs digits by
        entropy); the twin's `twin_accuracy`, `twin_nll`, `twin_ece`,
        `twin_entropy_digits`, `twin_entropy_noise`, `twin_auroc_noise`;
        the same with `laplace_` for last-layer Laplace, and its fitted
        `laplace_prior_precision`; and `num_train`, `num_test`.
    """
    start = time.monotonic()
    keras.utils.set_random_seed(seed)
    x_train, x_test, y_train, y_test = load_data(seed, test_fraction)
    noise = np.random.default_rng(seed).uniform(size=x_test.shape)
    noise = noise.astype("float32")
    num_train = len(x_train)
    if finetune_epochs is None:
        finetune_epochs = max(1, epochs // 4)
    print(
        f"backend {keras.backend.backend()}: {num_train} training and "
        f"{len(x_test)} test digits, 8x8 pixels"
    )

    print(f"\n1. the deterministic twin (keras.layers), {epochs} epochs")
    twin = build_twin()
    train(twin, x_train, y_train, epochs, batch_size, learning_rate, verbose)

    print(
        f"\n2. the Bayesian CNN: kb.to_bayesian(twin), kl_weight = "
        f"{kl_tempering:g} / {num_train}, fine-tuned {finetune_epochs} "
        "epochs"
    )
    bayesian = kb.to_bayesian(
        twin, moped_delta=0.1, kl_weight=kl_tempering / num_train, seed=seed
    )
    train(
        bayesian,
        x_train,
        y_train,
        finetune_epochs,
        batch_size,
        learning_rate / 10,
        verbose,
    )

    def predictions(model, samples):
        return [
            kb.uncertainty.mc_predict(
                model, x, num_samples=samples, batch_size=512, verbose=0
            )
            for x in (x_test, noise)
        ]

    print(
        "\n3. last-layer Laplace on the twin: kb.laplace.fit(twin, x, y), "
        "no retraining, prior precision by marginal likelihood"
    )
    laplace = kb.laplace.fit(twin, x_train, y_train)
    laplace_results = summarize(
        *(laplace.predict(x, link="probit")[None] for x in (x_test, noise)),
        y_test,
    )
    results = summarize(*predictions(bayesian, num_samples), y_test)
    twin_results = summarize(*predictions(twin, 1), y_test)
    _print_table(results, twin_results, laplace_results, num_samples)
    results.update({f"twin_{k}": v for k, v in twin_results.items()})
    results.update({f"laplace_{k}": v for k, v in laplace_results.items()})
    results["laplace_prior_precision"] = float(laplace.prior_precision)
    results.update(num_train=num_train, num_test=len(x_test))
    print(f"done in {time.monotonic() - start:.0f} s")
    return results


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument(
        "--finetune-epochs",
        type=int,
        default=None,
        help="fine-tuning epochs of the Bayesian CNN (default: epochs // 4)",
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=30,
        help="Monte Carlo weight samples at prediction",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument(
        "--kl-tempering",
        type=float,
        default=0.1,
        help="tau in kl_weight = tau / num_train",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(**vars(_parse_args()))
