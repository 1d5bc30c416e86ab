"""Turn a trained Keras model into a Bayesian one (MOPED initialisation)."""

import warnings

import keras
import numpy as np
from keras import ops

from keras_bayes import _validation, layers, posteriors
from keras_bayes.workflows import bayesian_layers

_ESTIMATORS = {"flipout": "Flipout", "reparameterization": "Reparameterization"}

# Keras class -> (keras_bayes class stem, constructor arguments carried over).
_CONV_ARGS = (
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "data_format",
    "dilation_rate",
    "groups",
    "activation",
    "use_bias",
)
_CONV_TRANSPOSE_ARGS = (
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "output_padding",
    "data_format",
    "dilation_rate",
    "activation",
    "use_bias",
)
_CONVERTIBLE = {
    keras.layers.Conv1D: ("Conv1D", _CONV_ARGS),
    keras.layers.Conv2D: ("Conv2D", _CONV_ARGS),
    keras.layers.Conv3D: ("Conv3D", _CONV_ARGS),
    keras.layers.Conv1DTranspose: ("Conv1DTranspose", _CONV_TRANSPOSE_ARGS),
    keras.layers.Conv2DTranspose: ("Conv2DTranspose", _CONV_TRANSPOSE_ARGS),
    keras.layers.Conv3DTranspose: ("Conv3DTranspose", _CONV_TRANSPOSE_ARGS),
    keras.layers.Dense: ("Dense", ("units", "activation", "use_bias")),
}
# Arguments of the Keras layers that a Bayesian layer has no place for.
_DROPPED = (
    "kernel_regularizer",
    "bias_regularizer",
    "kernel_constraint",
    "bias_constraint",
)


def moped_untransformed_scale(weights, moped_delta):
    """The `untransformed_scale` for which `scale = moped_delta * |w|`.

    Weights at exactly zero get the smallest representable scale (the
    `1e-5` floor of the posterior) rather than a degenerate one.
    """
    target = moped_delta * np.abs(np.asarray(weights, dtype="float64"))
    return posteriors.MeanFieldNormal.inverse_scale(target)


def to_bayesian(
    model,
    estimator="flipout",
    moped_delta=0.1,
    prior="normal",
    kl_weight=1.0,
    posterior_value="sample",
    seed=None,
):
    """A copy of `model` whose conv and dense layers are Bayesian.

    `Conv1D/2D/3D`, `Conv1D/2D/3DTranspose` and `Dense` layers become the
    matching Bayesian layer with every geometric argument carried over
    (strides, padding, groups, dilation, output padding, data format,
    activation, use_bias), `kernel_loc` set to the trained kernel and the
    posterior scale to `moped_delta * |w|` (MOPED, Krishnan et al. 2020);
    biases stay point estimates at their trained values. Every other layer
    is cloned with its weights. In mean mode the result computes exactly
    what `model` computes.

    Args:
        model: a built Sequential or Functional Keras model.
        estimator: `"flipout"` or `"reparameterization"`.
        moped_delta: relative posterior scale, a positive number.
        prior: kernel prior of the new layers (a `kb.priors` object, its
            name, or None).
        kl_weight: `kl_weight` of the new layers, e.g. `1 / num_train`.
        posterior_value: `"sample"` or `"mean"`.
        seed: int seed; layer `i` gets `seed + i`. None for random seeds.

    Returns:
        A new, built Keras model of the same kind.

    Example:

    ```python
    bayesian = kb.to_bayesian(trained_cnn, moped_delta=0.1,
                              kl_weight=1 / len(x_train))
    bayesian.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    bayesian.fit(x_train, y_train, epochs=3)
    ```
    """
    if not isinstance(estimator, str) or estimator.lower() not in _ESTIMATORS:
        raise _validation.invalid(
            "estimator", f"Expected one of {sorted(_ESTIMATORS)}.", estimator
        )
    suffix = _ESTIMATORS[estimator.lower()]
    try:
        delta = float(moped_delta)
    except (TypeError, ValueError):
        delta = float("nan")
    if not np.isfinite(delta) or delta <= 0:
        raise _validation.invalid(
            "moped_delta",
            "Expected a finite, strictly positive number.",
            moped_delta,
        )
    kl_weight = _validation.kl_weight(kl_weight)
    posterior_value = _validation.posterior_value(posterior_value)
    seed = _validation.seed(seed)
    if not isinstance(model, keras.Model) or not model.built:
        raise _validation.invalid(
            "model", "Expected a built Sequential or Functional model.", model
        )

    converted = []  # (original layer, new Bayesian layer)
    copied = []  # (original layer, new plain layer)

    def clone(layer):
        spec = _CONVERTIBLE.get(type(layer))
        if spec is None:
            new = layer.__class__.from_config(layer.get_config())
            copied.append((layer, new))
            return new
        stem, arg_names = spec
        config = layer.get_config()
        dropped = [name for name in _DROPPED if config.get(name) is not None]
        if dropped:
            warnings.warn(
                f"to_bayesian: layer '{layer.name}' has {dropped}, which "
                "its Bayesian counterpart does not take; they are dropped "
                "(the KL term regularises the kernel instead).",
                stacklevel=3,
            )
        layer_seed = None if seed is None else seed + len(converted)
        new = getattr(layers, f"{stem}{suffix}")(
            **{name: config[name] for name in arg_names},
            kernel_prior=prior,
            kl_weight=kl_weight,
            posterior_value=posterior_value,
            seed=layer_seed,
            activity_regularizer=config.get("activity_regularizer"),
            name=layer.name,
            dtype=config.get("dtype"),
            trainable=layer.trainable,
        )
        converted.append((layer, new))
        return new

    new_model = keras.models.clone_model(
        model, clone_function=clone, recursive=True
    )
    for original, new in copied:
        if original.weights:
            new.set_weights(original.get_weights())
    for original, new in converted:
        kernel = ops.convert_to_numpy(original.kernel)
        new.kernel_loc.assign(kernel)
        new.kernel_untransformed_scale.assign(
            moped_untransformed_scale(kernel, delta)
        )
        if original.use_bias:
            new.bias_loc.assign(ops.convert_to_numpy(original.bias))
    if not bayesian_layers(new_model):
        warnings.warn(
            "to_bayesian: the model has no Conv or Dense layer to convert; "
            "the copy is deterministic.",
            stacklevel=2,
        )
    return new_model
