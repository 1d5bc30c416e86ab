"""Calibration and out-of-distribution plots for the digits Bayesian CNN.

Trains the Bayesian CNN of `digits_bayesian_cnn.py` (same data, same model)
and draws two pictures from its Monte Carlo predictive distribution:

- a reliability diagram: test accuracy against confidence in equal-width
  confidence bins, with the diagonal of perfect calibration and the
  expected calibration error (ECE) in the title;
- histograms of the predictive entropy of test digits and of random-noise
  images: a useful Bayesian model puts the noise at higher entropy.

Run it with any backend:

    KERAS_BACKEND=torch python examples/digits_reliability.py --epochs 40
"""

import argparse
import importlib.util
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A tiny model: one thread per process is faster than several on a shared
# CPU (see digits_bayesian_cnn.py).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import keras_bayes as kb  # noqa: E402

HERE = Path(__file__).resolve().parent


def _load_digits_demo():
    """The sibling `digits_bayesian_cnn.py`, for its data and model."""
    path = HERE / "digits_bayesian_cnn.py"
    spec = importlib.util.spec_from_file_location("digits_bayesian_cnn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reliability_bins(labels, probs, num_bins):
    """Per-bin count, accuracy and mean confidence over equal-width bins."""
    confidence = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == labels
    bins = np.minimum((confidence * num_bins).astype(int), num_bins - 1)
    count = np.bincount(bins, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(bins, correct, minlength=num_bins) / count
        mean_confidence = (
            np.bincount(bins, confidence, minlength=num_bins) / count
        )
    return count, accuracy, mean_confidence


def plot_reliability(labels, probs, ece, num_bins, path):
    count, accuracy, _ = reliability_bins(labels, probs, num_bins)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    width = 1.0 / num_bins
    filled = count > 0
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.bar(
        edges[:-1][filled],
        accuracy[filled],
        width=width,
        align="edge",
        edgecolor="black",
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (largest predictive probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram, ECE = {ece:.4f}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_entropy_histograms(entropy_digits, entropy_noise, path):
    bins = np.linspace(0.0, np.log(10), 31)
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.hist(entropy_digits, bins=bins, alpha=0.6, label="test digits")
    ax.hist(entropy_noise, bins=bins, alpha=0.6, label="random noise")
    ax.axvline(np.log(10), color="black", linestyle=":", label="log 10")
    ax.set_xlabel("predictive entropy (nats)")
    ax.set_ylabel("images")
    ax.set_title("Predictive entropy: digits vs noise")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(
    epochs=40,
    num_samples=30,
    batch_size=64,
    learning_rate=0.01,
    num_bins=10,
    seed=0,
    test_fraction=0.2,
    output_dir="examples/output",
    verbose=1,
):
    """Train, plot and print the results; returns them as a dict.

    Args:
        epochs: training epochs.
        num_samples: Monte Carlo samples of the weights at prediction.
        batch_size: training batch size.
        learning_rate: initial Adam learning rate, decayed to 0 along a
            cosine.
        num_bins: equal-width confidence bins of the diagram and the ECE.
        seed: seed of the split, the weights, the noise and the images.
        test_fraction: fraction of the digits held out for testing.
        output_dir: folder the PNG files are written to (created).
        verbose: Keras verbosity of `fit` (0, 1 or 2).

    Returns:
        A dict with `accuracy`, `ece`, `entropy_digits`, `entropy_noise`
        (means in nats), `reliability_png` and `entropy_png` (paths).
    """
    start = time.monotonic()
    demo = _load_digits_demo()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    x_train, x_test, y_train, y_test = demo.load_data(seed, test_fraction)
    noise = np.random.default_rng(seed).uniform(size=x_test.shape)
    noise = noise.astype("float32")
    print(
        f"backend {keras.backend.backend()}: {len(x_train)} training and "
        f"{len(x_test)} test digits"
    )

    model = demo.build_model(len(x_train))
    steps = epochs * -(-len(x_train) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(
        x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=verbose
    )

    digit_samples = kb.uncertainty.mc_predict(
        model, x_test, num_samples=num_samples, batch_size=512, verbose=0
    )
    noise_samples = kb.uncertainty.mc_predict(
        model, noise, num_samples=num_samples, batch_size=512, verbose=0
    )
    probs = digit_samples.mean(axis=0)
    ece = kb.uncertainty.expected_calibration_error(
        y_test, probs, num_bins=num_bins
    )
    entropy_digits = kb.uncertainty.predictive_entropy(digit_samples)
    entropy_noise = kb.uncertainty.predictive_entropy(noise_samples)

    reliability_png = output_dir / "digits_reliability_diagram.png"
    entropy_png = output_dir / "digits_entropy_histogram.png"
    plot_reliability(y_test, probs, ece, num_bins, reliability_png)
    plot_entropy_histograms(entropy_digits, entropy_noise, entropy_png)

    results = {
        "accuracy": float(np.mean(probs.argmax(axis=-1) == y_test)),
        "ece": ece,
        "entropy_digits": float(entropy_digits.mean()),
        "entropy_noise": float(entropy_noise.mean()),
        "reliability_png": str(reliability_png),
        "entropy_png": str(entropy_png),
    }
    print(f"\nMonte Carlo predictive, {num_samples} weight samples:")
    print(f"  test accuracy               {results['accuracy']:.4f}")
    print(f"  expected calibration error  {ece:.4f}")
    print("mean predictive entropy (nats):")
    print(f"  test digits                 {results['entropy_digits']:.4f}")
    print(f"  random-noise images         {results['entropy_noise']:.4f}")
    print(f"wrote {reliability_png} and {entropy_png}")
    print(f"done in {time.monotonic() - start:.0f} s")
    return results


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument(
        "--num-samples",
        type=int,
        default=30,
        help="Monte Carlo weight samples at prediction",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--num-bins", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--output-dir", default="examples/output")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(**vars(_parse_args()))
