"""Train small `tfp.layers` models in tf_keras and save them for migration.

Run in TensorFlow Probability's own environment (tf_keras, Keras 2):

    TF_USE_LEGACY_KERAS=1 python tests/peers/make_tfp_models.py OUT_DIR

For each model, `OUT_DIR/<name>/` gets `weights.h5` (`save_weights`),
`model.h5` and `model.keras` (`save`), and `reference.npz`: inputs `x`, the
outputs `mean` that TFP computes at the posterior mean (the same model with
`lambda d: d.mean()` tensor functions and the trained weights), and `kl`,
TFP's `sum(model.losses)` after a call (default N(0, 1) priors).
"""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
import tf_keras  # noqa: E402

warnings.filterwarnings("ignore")
tfpl = tfp.layers
layers = tf_keras.layers


def _mean_functions(mean):
    """TFP's tensor functions taking the posterior mean, or the defaults."""
    if not mean:
        return {}
    return {
        "kernel_posterior_tensor_fn": lambda d: d.mean(),
        "bias_posterior_tensor_fn": lambda d: d.mean(),
    }


def conv2d(mean=False):
    """2D Flipout (mean-field bias) and Reparameterization, BatchNorm,
    DenseLocalReparameterization, plain Conv2D and Dense layers."""
    f = _mean_functions(mean)
    return tf_keras.Sequential(
        [
            tf_keras.Input((8, 8, 2)),
            tfpl.Convolution2DFlipout(
                4,
                3,
                padding="same",
                activation="relu",
                bias_posterior_fn=tfpl.default_mean_field_normal_fn(),
                **f,
            ),
            layers.BatchNormalization(momentum=0.5),
            layers.MaxPooling2D(),
            tfpl.Convolution2DReparameterization(3, 3, **f),
            layers.Conv2D(3, 1),
            layers.Flatten(),
            tfpl.DenseLocalReparameterization(6, activation="relu", **f),
            layers.Dense(2),
        ]
    )


def conv1d(mean=False):
    """A Functional model: 1D Reparameterization and Flipout, a branch,
    DenseFlipout."""
    f = _mean_functions(mean)
    inputs = tf_keras.Input((10, 3))
    x = tfpl.Convolution1DReparameterization(
        4, 3, padding="same", activation="relu", **f
    )(inputs)
    y = tfpl.Convolution1DFlipout(4, 3, dilation_rate=2, padding="same", **f)(x)
    x = layers.Add()([x, y])
    x = layers.Conv1D(2, 1)(x)
    x = layers.GlobalAveragePooling1D()(x)
    outputs = tfpl.DenseFlipout(3, **f)(x)
    return tf_keras.Model(inputs, outputs)


def conv3d(mean=False):
    """3D Flipout and Reparameterization, DenseReparameterization; the input
    shape given to the first
    layer (`input_shape=`), as TFP's examples do, rather than an Input."""
    f = _mean_functions(mean)
    return tf_keras.Sequential(
        [
            tfpl.Convolution3DFlipout(
                2, 2, activation="relu", input_shape=(4, 4, 4, 1), **f
            ),
            tfpl.Convolution3DReparameterization(2, 2, strides=2, **f),
            layers.Flatten(),
            tfpl.DenseReparameterization(2, **f),
        ]
    )


def custom_divergence(mean=False):
    """A divergence function of the user's own: not rebuilt, only loaded."""

    def scaled_kl(q, p, _):
        return tfp.distributions.kl_divergence(q, p) / 100.0

    f = _mean_functions(mean)
    return tf_keras.Sequential(
        [
            tf_keras.Input((5,)),
            tfpl.DenseFlipout(3, kernel_divergence_fn=scaled_kl, **f),
        ]
    )


MODELS = {
    "conv2d": conv2d,
    "conv1d": conv1d,
    "conv3d": conv3d,
    "custom_divergence": custom_divergence,
}


def main(out_dir):
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    for name, build in MODELS.items():
        model = build()
        shape = model.input_shape[1:]
        x_train = rng.normal(size=(16, *shape)).astype("float32")
        y_train = rng.normal(size=(16, *model.output_shape[1:]))
        model.compile(optimizer=tf_keras.optimizers.Adam(0.02), loss="mse")
        model.fit(x_train, y_train.astype("float32"), batch_size=4, verbose=0)
        x = rng.normal(size=(5, *shape)).astype("float32")
        model(x)
        kl = float(tf.add_n(model.losses).numpy())
        reference = build(mean=True)
        reference.set_weights(model.get_weights())
        mean = reference(x).numpy()
        folder = os.path.join(out_dir, name)
        os.makedirs(folder)
        model.save_weights(os.path.join(folder, "weights.h5"))
        model.save(os.path.join(folder, "model.h5"))
        model.save(os.path.join(folder, "model.keras"))
        np.savez(os.path.join(folder, "reference.npz"), x=x, mean=mean, kl=kl)


if __name__ == "__main__":
    main(sys.argv[1])
