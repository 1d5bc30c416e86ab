"""Trained `tfp.layers` models (tf_keras files) into keras-bayes."""

import os
import warnings

import keras
import numpy as np

from keras_bayes import layers as kb_layers
from keras_bayes.layers.geometry import ConvGeometry
from keras_bayes.migrate import _files, _plan, _tfp_functions
from keras_bayes.workflows import is_bayesian

# TFP's variable names -> (keras-bayes posterior weight, role). TFP's
# scale is softplus(u) + eps of the dtype (1.19e-7 in float32): the
# standard deviations are computed from TFP's own parameterisation and
# handed to the keras-bayes posterior family, which stores them its way.
# TFP names them `{kernel,bias}_posterior_{loc,untransformed_scale}`.
_ROLES = {
    f"{weight}_posterior_{part}": (weight, role)
    for weight in ("kernel", "bias")
    for part, role in (("loc", _plan.LOC), ("untransformed_scale", _plan.SCALE))
}
_TFP_NAMES = {role: name for name, role in _ROLES.items()}


def _tfp_scale(untransformed):
    """TFP's `default_mean_field_normal_fn` standard deviation."""
    eps = np.finfo(untransformed.dtype).eps
    return np.logaddexp(0.0, untransformed.astype("float64")) + eps


# `tfp.layers` class names (and aliases) -> keras-bayes class names.
CLASSES = {
    f"{prefix}{rank}D{estimator}": f"Conv{rank}D{estimator}"
    for prefix in ("Conv", "Convolution")
    for rank in (1, 2, 3)
    for estimator in ("Reparameterization", "Flipout")
}
CLASSES.update(
    {
        f"Dense{estimator}": f"Dense{estimator}"
        for estimator in (
            "Reparameterization",
            "Flipout",
            "LocalReparameterization",
        )
    }
)
# Keras' convolution arguments, but `groups` (tfp.layers has none).
_CONV_ARGUMENTS = tuple(a for a in ConvGeometry.exposed if a != "groups")
_COMMON_ARGUMENTS = ("name", "trainable", "activation", "activity_regularizer")

_KNOWN_KEYS = (
    set(_CONV_ARGUMENTS)
    | set(_COMMON_ARGUMENTS)
    | set(_tfp_functions.FUNCTIONS)
    | {f"{key}_type" for key in _tfp_functions.FUNCTIONS}
    | {"units", "seed", "dtype", "batch_input_shape"}
)


def _roles(saved):
    """`{(weight, role): array}` of a saved TFP layer, or a problem."""
    names = [name for name, _ in saved.weights]
    if None not in names:
        unknown = [name for name in names if name not in _ROLES]
        if unknown:
            return f"layer '{saved.name}': unknown TFP variables {unknown}"
        if len(set(names)) != len(names):
            return (
                f"layer '{saved.name}' holds the variables of several "
                "layers (a nested model?); only flat models can be read"
            )
        return {_ROLES[name]: value for name, value in saved.weights}
    # `.keras` files store TFP variables by position, in creation order:
    # kernel loc, kernel scale (if any), bias loc, bias scale (if any).
    kernel = [value for _, value in saved.weights if value.ndim >= 2]
    bias = [value for _, value in saved.weights if value.ndim == 1]
    if len(kernel) + len(bias) != len(saved.weights) or not kernel:
        return f"layer '{saved.name}': unexpected variables in the file"
    order = (_plan.LOC, _plan.SCALE)
    roles = {("kernel", role): value for role, value in zip(order, kernel)}
    roles.update({("bias", role): value for role, value in zip(order, bias)})
    return roles


def _is_tfp(saved):
    if saved.weights and all(name is not None for name, _ in saved.weights):
        return any(name in _ROLES for name, _ in saved.weights)
    return saved.class_name in CLASSES


def _plan_bayesian(plan, layer, saved):
    roles = _roles(saved)
    if isinstance(roles, str):
        plan.problem(roles)
        return
    if set(roles) != set(_plan.posterior_roles(layer)):
        plan.problem(
            f"layer '{layer.name}' ({type(layer).__name__}) has "
            f"{_plan.posterior_names(layer)}; the file's layer '{saved.name}' "
            f"has {sorted(_TFP_NAMES[role] for role in roles)}. Match "
            "`use_bias` and the posteriors: a TFP "
            "`default_mean_field_normal_fn()` bias is "
            "`bias_posterior='mean_field_normal'`."
        )
        return
    for weight in layer.posterior_weights:
        loc, scale = (weight.name, _plan.LOC), (weight.name, _plan.SCALE)
        what = {
            role: f"'{saved.name}' {_TFP_NAMES[key]}"
            for role, key in ((_plan.LOC, loc), (_plan.SCALE, scale))
        }
        plan.add_posterior(
            layer,
            weight,
            roles[loc],
            _tfp_scale(roles[scale]) if scale in roles else None,
            what,
        )


def _plan_plain(plan, layer, saved):
    variables = list(layer.weights)
    named = all(name is not None for name, _ in saved.weights)
    saved_names = [name for name, _ in saved.weights]
    if len(variables) != len(saved.weights) or (
        named and saved_names != [v.name for v in variables]
    ):
        listed = saved_names if named else f"{len(saved.weights)} variables"
        plan.problem(
            f"layer '{layer.name}' ({type(layer).__name__}) has "
            f"{[v.name for v in variables]}; the file's layer "
            f"'{saved.name}' has {listed}"
        )
        return
    for variable, (name, value) in zip(variables, saved.weights):
        what = f"'{saved.name}' {name or variable.name}"
        plan.add(layer, variable, value, what)


def _kind(bayesian):
    return "a Bayesian layer" if bayesian else "a plain layer"


def _plan_layer(plan, layer, saved):
    tfp_layer = _is_tfp(saved)
    if tfp_layer != is_bayesian(layer):
        plan.problem(
            f"layer '{layer.name}' ({type(layer).__name__}) is "
            f"{_kind(not tfp_layer)}, the file's layer '{saved.name}' is "
            f"{_kind(tfp_layer)}"
        )
    elif tfp_layer:
        _plan_bayesian(plan, layer, saved)
    else:
        _plan_plain(plan, layer, saved)


def load_tfp_weights(model, filepath):
    """Load a trained `tfp.layers` model's weights onto a keras-bayes model.

    The file is what tf_keras writes: `model.save_weights("w.h5")`, a whole
    model `model.save("m.h5")`, or `model.save("m.keras")`. Layers that hold
    weights are matched in order: the k-th such layer of the file goes to
    the k-th of `model`. A `tfp.layers` conv or dense layer goes to a
    keras-bayes layer: `kernel_posterior_loc` and `bias_posterior_loc`
    give the kernel's and the bias' posterior means, and the untransformed
    scales (the kernel's, and a mean-field bias') give the same standard
    deviations, `softplus(u)` plus the dtype's epsilon as TFP computes
    them, which the layer's posterior family stores in its own
    parameterisation. A plain tf_keras layer (Conv, Dense,
    BatchNormalization with its moving statistics, ...) goes to the Keras
    layer with the same variables. Priors, `kl_weight` and the posterior
    switch are the model's own.

    Every layer is checked before anything is assigned: a different number
    of layers, a Bayesian layer where the file has a plain one (or the
    reverse), or a shape that differs raises a `ValueError` naming the
    layers and shapes, and leaves the model unchanged.

    Args:
        model: a built Keras model of keras-bayes and Keras layers with the
            architecture of the tf_keras model.
        filepath: path of the tf_keras `.h5` or `.keras` file.

    Example:

    ```python
    inputs = keras.Input((28, 28, 1))
    x = kb.layers.Conv2DFlipout(8, 3, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)  # moving statistics load too
    outputs = kb.layers.DenseFlipout(10)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    kb.migrate.load_tfp_weights(model, "tfp_weights.h5")
    ```
    """
    layers = _plan.weight_layers(model)
    _, saved = _files.read_tf_keras(filepath)
    saved = [layer for layer in saved if layer.weights]
    plan = _plan.Plan("load_tfp_weights", os.fspath(filepath))
    if plan.check_count(layers, [s.name for s in saved], "layers"):
        for layer, saved_layer in zip(layers, saved):
            _plan_layer(plan, layer, saved_layer)
    plan.apply()


def _prior(config, weight):
    has_prior = config.get(f"{weight}_prior_fn") is not None
    has_divergence = config.get(f"{weight}_divergence_fn") is not None
    return "normal" if has_prior and has_divergence else None


def _bayesian_entry(entry, saved, path, problems):
    """The keras-bayes layer config replacing a `tfp.layers` entry."""
    config = entry["config"]
    name = config["name"]
    function_problems = _tfp_functions.problems(entry, path)
    if function_problems:
        problems.extend(function_problems)
        return None
    if saved is None or not saved.weights:
        problems.append(f"layer '{name}': the file holds no weights for it")
        return None
    roles = _roles(saved)
    if isinstance(roles, str):
        problems.append(roles)
        return None
    unknown = sorted(set(config) - _KNOWN_KEYS)
    if unknown:
        warnings.warn(
            f"from_tfp: layer '{name}' has config entries {unknown} that "
            "keras-bayes does not know; they are ignored.",
            stacklevel=4,
        )
    kernel_stochastic = ("kernel", _plan.SCALE) in roles
    bias_stochastic = ("bias", _plan.SCALE) in roles
    kwargs = {key: config[key] for key in _COMMON_ARGUMENTS if key in config}
    geometry = ("units",) if "units" in config else _CONV_ARGUMENTS
    kwargs.update({key: config[key] for key in geometry})
    if config.get("seed") is not None:
        kwargs["seed"] = config["seed"]
    dtype = config.get("dtype")
    if isinstance(dtype, dict):
        dtype = dtype.get("config", {}).get("name")
    kwargs.update(
        dtype=dtype,
        use_bias=config.get("bias_posterior_fn") is not None,
        kernel_posterior=(
            "mean_field_normal" if kernel_stochastic else "deterministic"
        ),
        kernel_prior=_prior(config, "kernel") if kernel_stochastic else None,
        bias_posterior=(
            "mean_field_normal" if bias_stochastic else "deterministic"
        ),
        bias_prior=_prior(config, "bias") if bias_stochastic else None,
        posterior_value="sample",
        kl_weight=1.0,
    )
    layer = getattr(kb_layers, CLASSES[entry["class_name"]])(**kwargs)
    new = keras.saving.serialize_keras_object(layer)
    for key in ("name", "inbound_nodes"):
        if key in entry:
            new[key] = entry[key]
    return new


def _convert(config, saved, path):
    """The Keras 3 config of the tf_keras model `config`."""
    by_name = {layer.name: layer for layer in saved}
    problems = []
    entries = []
    for entry in _files.model_layers(config):
        class_name = entry.get("class_name")
        name = entry.get("config", {}).get("name")
        module = entry.get("module") or ""
        if class_name in _files.MODEL_CLASSES:
            problems.append(
                f"layer '{name}' is a nested model; from_tfp reads flat "
                "Sequential / Functional models"
            )
        elif class_name in CLASSES:
            entries.append(
                _bayesian_entry(entry, by_name.get(name), path, problems)
            )
        elif module.startswith("tensorflow_probability"):
            problems.append(
                f"layer '{name}' is tfp.layers.{class_name}, which has no "
                "keras-bayes counterpart; supported: "
                f"{sorted(set(CLASSES.values()))}"
            )
        else:
            # A tf_keras layer: without "module", Keras 3 reads it with its
            # own legacy (tf.keras) rules, as `keras.models.load_model` does
            # for tf.keras HDF5 files.
            entries.append(
                {
                    key: value
                    for key, value in entry.items()
                    if key not in ("module", "registered_name")
                }
            )
    if problems:
        listing = "\n".join(f"- {problem}" for problem in problems)
        raise ValueError(
            f"from_tfp: cannot rebuild the model in {path!r}:\n{listing}"
        )
    new_config = dict(config["config"])
    new_config["layers"] = entries
    for key in ("input_layers", "output_layers"):
        # tf_keras lists a single input as `[[name, 0, 0]]`; Keras 3 calls
        # such a model with a list then, and warns on a plain tensor.
        nodes = new_config.get(key)
        if isinstance(nodes, list) and len(nodes) == 1:
            new_config[key] = nodes[0]
    return new_config


def from_tfp(filepath):
    """A Keras 3 model rebuilt from a tf_keras `tfp.layers` model file.

    Reads the model config that a tf_keras `model.save("m.h5")` or
    `model.save("m.keras")` stores, maps each `tfp.layers` conv and dense
    layer to the keras-bayes layer of the same name (Conv1D/2D/3D
    Reparameterization and Flipout, Dense Reparameterization, Flipout and
    LocalReparameterization) and every tf_keras layer to the Keras 3 layer,
    then loads the weights. Neither TensorFlow Probability nor tf_keras is
    needed.

    Understood: Sequential and Functional models (not nested ones, not
    subclassed ones) whose `tfp.layers` use TFP's default functions:
    `default_mean_field_normal_fn(...)` posteriors (any initializers; a
    singular one becomes `"deterministic"`, a mean-field bias
    `bias_posterior="mean_field_normal"`, read from the saved variables),
    `default_multivariate_normal_fn` priors (N(0, 1); `kernel_prior_fn=None`
    or `bias_prior_fn=None` gives no KL term for that weight),
    `lambda d: d.sample()` tensor functions and the plain
    `kl_divergence(q, p)` divergence. The layers get `kl_weight=1.0` and
    `posterior_value="sample"`, TFP's behaviour. Any other function is
    bytecode that keras-bayes does not run: it is a `ValueError` naming the
    layer and the argument, with what to use instead.

    Args:
        filepath: path of the tf_keras `.h5` or `.keras` model file.

    Returns:
        A built Keras 3 model (uncompiled).

    Example:

    ```python
    model = kb.migrate.from_tfp("tfp_model.keras")
    kb.set_posterior_value(model, "mean")
    model.predict(x)
    ```
    """
    config, saved = _files.read_tf_keras(filepath)
    path = os.fspath(filepath)
    if config is None:
        raise ValueError(
            f"from_tfp: {path!r} holds weights only (`save_weights`), no "
            "model config. Build the model with keras-bayes layers and "
            "call `kb.migrate.load_tfp_weights(model, filepath)`."
        )
    new_config = _convert(config, saved, path)
    if config["class_name"] == "Sequential":
        model = keras.Sequential.from_config(new_config)
    else:
        model = keras.Model.from_config(new_config)
    plan = _plan.Plan("from_tfp", path)
    for saved_layer in saved:
        if saved_layer.weights:
            _plan_layer(plan, model.get_layer(saved_layer.name), saved_layer)
    plan.apply()
    return model
