"""A Bayesian convolutional denoising autoencoder on the digits.

The 8x8 digits of `sklearn.datasets.load_digits`, scaled to [0, 1], get
Gaussian pixel noise (clipped back to [0, 1]); the model learns to map the
noisy image to the clean one. The encoder is two strided
`Conv2DFlipout` layers (8x8 -> 4x4 -> 2x2), the decoder two strided
`Conv2DTransposeFlipout` layers (2x2 -> 4x4 -> 8x8) with a sigmoid output,
trained with the mean squared error plus the KL divergence of the weight
posterior (`kl_weight = 1 / num_train`). The MSE is scaled into the
negative log-likelihood of a Gaussian pixel model with standard deviation
`pixel_std`, summed over the 64 pixels: the plain per-pixel mean (a
likelihood with variance 1/2) is so weak next to the KL term of some ten
thousand weights that the posterior stays wide and the reconstructions
blurry.

Monte Carlo predictions of the test set give a mean reconstruction and a
per-pixel predictive standard deviation (where the model is unsure), saved
as a grid of images. The script reports the test MSE of the mean
reconstruction against the MSE of the noisy input itself.

Run it with any backend:

    KERAS_BACKEND=jax python examples/denoising_autoencoder.py --epochs 60
"""

import argparse
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
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_bayes as kb  # noqa: E402


def load_noisy_digits(seed, test_fraction, noise_std):
    """(noisy, clean) pairs of (N, 8, 8, 1) images in [0, 1], split."""
    digits = load_digits()
    clean = (digits.images / 16.0).astype("float32")[..., None]
    noise = np.random.default_rng(seed).normal(0.0, noise_std, clean.shape)
    noisy = np.clip(clean + noise, 0.0, 1.0).astype("float32")
    return train_test_split(
        noisy,
        clean,
        test_size=test_fraction,
        random_state=seed,
        stratify=digits.target,
    )


def build_model(num_train):
    """Strided Flipout encoder, strided transposed Flipout decoder."""
    kl_weight = 1.0 / num_train
    return keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1)),
            kb.layers.Conv2DFlipout(
                16,
                3,
                strides=2,
                padding="same",
                activation="relu",
                kl_weight=kl_weight,
            ),
            kb.layers.Conv2DFlipout(
                32,
                3,
                strides=2,
                padding="same",
                activation="relu",
                kl_weight=kl_weight,
            ),
            kb.layers.Conv2DTransposeFlipout(
                16,
                3,
                strides=2,
                padding="same",
                activation="relu",
                kl_weight=kl_weight,
            ),
            kb.layers.Conv2DTransposeFlipout(
                1,
                3,
                strides=2,
                padding="same",
                activation="sigmoid",
                kl_weight=kl_weight,
            ),
        ],
        name="bayesian_denoising_autoencoder",
    )


def gaussian_nll_loss(pixel_std, num_pixels=64):
    """MSE scaled to the per-image negative log-likelihood (up to a constant).

    For independent N(y, pixel_std**2) pixels, -log p = sum of squared
    errors / (2 pixel_std**2) + const = num_pixels * MSE / (2 pixel_std**2).
    """
    factor = num_pixels / (2.0 * pixel_std**2)

    def loss(y_true, y_pred):
        return factor * keras.losses.mean_squared_error(
            keras.ops.reshape(y_true, (-1, num_pixels)),
            keras.ops.reshape(y_pred, (-1, num_pixels)),
        )

    return loss


def plot_grid(noisy, clean, mean, std, path):
    """Rows: noisy input, clean target, mean reconstruction, predictive std."""
    rows = [
        ("noisy input", noisy, "gray", 1.0),
        ("clean target", clean, "gray", 1.0),
        ("mean reconstruction", mean, "gray", 1.0),
        ("predictive std", std, "magma", max(float(std.max()), 1e-6)),
    ]
    columns = len(noisy)
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(1.2 * columns, 1.3 * len(rows))
    )
    axes = np.asarray(axes).reshape(len(rows), columns)
    for row, (title, images, cmap, vmax) in enumerate(rows):
        for column in range(columns):
            ax = axes[row, column]
            ax.imshow(images[column, ..., 0], cmap=cmap, vmin=0.0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(
    epochs=60,
    num_samples=30,
    batch_size=64,
    learning_rate=0.01,
    noise_std=0.3,
    pixel_std=0.1,
    num_images=8,
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
        noise_std: standard deviation of the Gaussian pixel noise.
        pixel_std: standard deviation of the Gaussian likelihood of a
            clean pixel; the MSE is scaled by `64 / (2 pixel_std**2)`.
        num_images: test images shown in the grid.
        seed: seed of the split, the noise and the weights.
        test_fraction: fraction of the digits held out for testing.
        output_dir: folder the PNG file is written to (created).
        verbose: Keras verbosity of `fit` (0, 1 or 2).

    Returns:
        A dict with `mse_denoised` (mean reconstruction vs clean test
        images), `mse_noisy` (noisy input vs clean), `mean_std` (mean
        per-pixel predictive standard deviation) and `grid_png` (path).
    """
    start = time.monotonic()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    noisy_train, noisy_test, clean_train, clean_test = load_noisy_digits(
        seed, test_fraction, noise_std
    )
    print(
        f"backend {keras.backend.backend()}: {len(noisy_train)} training and "
        f"{len(noisy_test)} test digits, noise std {noise_std}"
    )

    model = build_model(len(noisy_train))
    steps = epochs * -(-len(noisy_train) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=gaussian_nll_loss(pixel_std),
    )
    model.fit(
        noisy_train,
        clean_train,
        epochs=epochs,
        batch_size=batch_size,
        verbose=verbose,
    )

    samples = kb.uncertainty.mc_predict(
        model, noisy_test, num_samples=num_samples, batch_size=512, verbose=0
    )
    mean = samples.mean(axis=0)
    std = samples.std(axis=0)
    shown = min(num_images, len(noisy_test))
    grid_png = output_dir / "denoising_autoencoder.png"
    plot_grid(
        noisy_test[:shown],
        clean_test[:shown],
        mean[:shown],
        std[:shown],
        grid_png,
    )

    results = {
        "mse_denoised": float(np.mean((mean - clean_test) ** 2)),
        "mse_noisy": float(np.mean((noisy_test - clean_test) ** 2)),
        "mean_std": float(std.mean()),
        "grid_png": str(grid_png),
    }
    print(f"\nMonte Carlo predictive, {num_samples} weight samples:")
    print(f"  test MSE, noisy input         {results['mse_noisy']:.4f}")
    print(f"  test MSE, mean reconstruction {results['mse_denoised']:.4f}")
    print(f"  mean per-pixel predictive std {results['mean_std']:.4f}")
    print(f"wrote {grid_png}")
    print(f"done in {time.monotonic() - start:.0f} s")
    return results


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument(
        "--num-samples",
        type=int,
        default=30,
        help="Monte Carlo weight samples at prediction",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--noise-std", type=float, default=0.3)
    parser.add_argument("--pixel-std", type=float, default=0.1)
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--output-dir", default="examples/output")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(**vars(_parse_args()))
