"""Trained bayesian-torch (and plain PyTorch) weights into keras-bayes."""

import collections.abc
import os
import pickle
import warnings

import keras
import numpy as np

from keras_bayes import _validation
from keras_bayes.migrate import _plan
from keras_bayes.workflows import is_bayesian

# bayesian-torch's parameter names -> (keras-bayes posterior weight, role).
# `rho` is bayesian-torch's parameterisation of the standard deviation,
# `sigma = log1p(exp(rho))`: sigma goes to the posterior family.
_BAYESIAN = {
    "mu_kernel": ("kernel", _plan.LOC),
    "rho_kernel": ("kernel", _plan.SCALE),
    "mu_weight": ("kernel", _plan.LOC),
    "rho_weight": ("kernel", _plan.SCALE),
    "mu_bias": ("bias", _plan.LOC),
    "rho_bias": ("bias", _plan.SCALE),
}
# Buffers older bayesian-torch releases saved: the noise is no information;
# the priors are the keras-bayes model's own (said in a warning).
_NOISE = ("eps_kernel", "eps_weight", "eps_bias")
_PRIORS = (
    "prior_weight_mu",
    "prior_weight_sigma",
    "prior_bias_mu",
    "prior_bias_sigma",
)
# Keras variable names -> PyTorch parameter / buffer names.
_PLAIN = {
    "kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
_IGNORED = ("num_batches_tracked",) + _NOISE


def _read(state_dict_or_path):
    """An ordered `{name: np.ndarray}` from a state_dict or a `.pt` file."""
    source = state_dict_or_path
    if isinstance(source, (str, os.PathLike)):
        try:
            import torch
        except ImportError:
            raise ImportError(
                "Reading a `torch.save` file needs PyTorch; without it, "
                "pass the state_dict as a mapping of NumPy arrays."
            ) from None
        try:
            source = torch.load(
                os.fspath(source), map_location="cpu", weights_only=True
            )
        except pickle.UnpicklingError:
            raise ValueError(
                f"{os.fspath(state_dict_or_path)!r} is not a state_dict "
                "file (it holds Python objects other than tensors). Save "
                "the model's weights with `torch.save(model.state_dict(), "
                "path)`."
            ) from None
    if isinstance(source, collections.abc.Mapping) and isinstance(
        source.get("state_dict"), collections.abc.Mapping
    ):
        source = source["state_dict"]
    if not isinstance(source, collections.abc.Mapping) or not all(
        hasattr(value, "shape") for value in source.values()
    ):
        raise _validation.invalid(
            "state_dict_or_path",
            "Expected a PyTorch `state_dict` (a mapping of names to "
            "tensors) or the path of a file saved from one with "
            "`torch.save`.",
            type(source).__name__,
        )
    state = {}
    for name, value in source.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        state[str(name)] = np.asarray(value)
    return state


def _modules(state):
    """`[(prefix, {parameter: array})]` in the order of the state_dict."""
    modules = {}
    for key, value in state.items():
        prefix, _, parameter = key.rpartition(".")
        modules.setdefault(prefix, {})[parameter] = value
    return [
        (prefix, params)
        for prefix, params in modules.items()
        if set(params) - set(_IGNORED) - set(_PRIORS)
    ]


def _keras_layout(value):
    """PyTorch kernel layout -> Keras'.

    Linear `(out, in)` -> `(in, out)`; convolution `(out, in/groups, *k)`
    -> `(*k, in/groups, out)`; transposed convolution `(in, out, *k)` ->
    `(*k, out, in)`, Keras' transposed layout. All three reverse the two
    leading axes and put the spatial ones first.
    """
    axes = tuple(range(2, value.ndim)) + (1, 0)
    return np.transpose(value, axes)


def _keras_kernel(value, perm):
    """The Keras kernel, rows permuted after a Flatten (see below)."""
    value = _keras_layout(value)
    if perm is not None and value.ndim == 2 and value.shape[0] == perm.size:
        value = value[perm]
    return value


def _upstream_data_format(tensor):
    """The data format of the nearest layer before `tensor` that has one."""
    while tensor is not None:
        layer = tensor._keras_history.operation
        data_format = getattr(layer, "data_format", None)
        if data_format in ("channels_first", "channels_last"):
            return data_format
        inputs = getattr(layer, "_inbound_nodes", None)
        if not inputs or not inputs[0].input_tensors:
            break
        tensor = inputs[0].input_tensors[0]
    return keras.config.image_data_format()


def _flatten_permutation(layer):
    """Keras' feature order in terms of PyTorch's, after a `Flatten`.

    PyTorch flattens `(C, *spatial)` maps channel-major; a Keras `Flatten`
    of channels-last maps is channel-minor. Walks back from `layer` through
    layers without a kernel that keep the shape (Dropout, activations,
    normalizations); returns None when no `Flatten` of maps is found or
    the orders agree, else `perm` with Keras feature j = PyTorch's perm[j].
    Raises `LookupError` when `layer` is not part of a traced graph.
    """
    try:
        tensor = layer.input
    except (AttributeError, ValueError):
        raise LookupError(layer.name) from None
    while True:
        source = tensor._keras_history.operation
        if isinstance(source, keras.layers.Flatten):
            break
        kernel = getattr(source, "kernel", None) is not None
        try:
            source_input = source.input
        except (AttributeError, ValueError):
            return None
        if not hasattr(source_input, "shape"):
            return None  # several inputs: not a chain from a Flatten
        if (
            kernel
            or is_bayesian(source)
            or isinstance(source, keras.layers.InputLayer)
            or tuple(source_input.shape) != tuple(tensor.shape)
        ):
            return None
        tensor = source_input
    maps = source.input
    dims = tuple(maps.shape[1:])
    if len(dims) < 2 or any(d is None for d in dims):
        return None
    channels_last = _upstream_data_format(maps) == "channels_last"
    torch_shape = (dims[-1],) + dims[:-1] if channels_last else dims
    index = np.arange(int(np.prod(dims))).reshape(torch_shape)
    keras_view = np.moveaxis(index, 0, -1) if channels_last else index
    if source.data_format == "channels_first":
        keras_view = np.moveaxis(keras_view, 0, -1)
    perm = keras_view.reshape(-1)
    return None if np.array_equal(perm, np.arange(perm.size)) else perm


class _Loader:
    """Plans one module's values onto one layer; collects what to warn."""

    def __init__(self, plan):
        self.plan = plan
        self.dropped = []
        self.priors = []

    def _mismatch(self, layer, names, prefix, params):
        self.plan.problem(
            f"layer '{layer.name}' ({type(layer).__name__}) has {names}; "
            f"the module '{prefix}' has {sorted(params)}"
        )

    def bayesian(self, layer, prefix, params, perm):
        wanted = _plan.posterior_roles(layer)
        names = _plan.posterior_names(layer)
        self.priors.extend(f"{prefix}.{n}" for n in params if n in _PRIORS)
        roles = {_BAYESIAN[name]: name for name in params if name in _BAYESIAN}
        known = set(_BAYESIAN) | set(_PRIORS) | set(_IGNORED)
        if set(params) - known or len(roles) != len(
            [n for n in params if n in _BAYESIAN]
        ):
            self._mismatch(layer, names, prefix, params)
            return
        bias_scale = ("bias", _plan.SCALE)
        if bias_scale in roles and bias_scale not in wanted:
            self.dropped.append((f"{prefix}.rho_bias", layer.name))
            del roles[bias_scale]
        if set(roles) != set(wanted):
            self._mismatch(layer, names, prefix, params)
            return
        for weight in layer.posterior_weights:
            arrays, what = {}, {}
            for role in (_plan.LOC, _plan.SCALE):
                name = roles.get((weight.name, role))
                if name is None:
                    continue
                value = params[name]
                if weight.name == "kernel":
                    value = _keras_kernel(value, perm)
                if role == _plan.SCALE:
                    # bayesian-torch's sigma = log1p(exp(rho)).
                    value = np.logaddexp(0.0, value.astype("float64"))
                arrays[role], what[role] = value, f"`{prefix}.{name}`"
            self.plan.add_posterior(
                layer,
                weight,
                arrays[_plan.LOC],
                arrays.get(_plan.SCALE),
                what,
            )

    def plain(self, layer, prefix, params, perm):
        names = [variable.name for variable in layer.weights]
        wanted = [_PLAIN.get(name) for name in names]
        present = set(params) - set(_IGNORED)
        if (
            None in wanted
            or len(set(wanted)) != len(wanted)
            or (present != set(wanted))
        ):
            self._mismatch(layer, names, prefix, params)
            return
        # Per-feature vectors follow a permuted feature order only in a
        # layer without a kernel (a normalization after the Flatten).
        per_feature = perm is not None and "kernel" not in names
        for variable, name in zip(layer.weights, wanted):
            value = params[name]
            if variable.name == "kernel":
                value = _keras_kernel(value, perm)
            elif per_feature and value.shape == (perm.size,):
                value = value[perm]
            self.plan.add(layer, variable, value, f"`{prefix}.{name}`")


def load_bayesian_torch(model, state_dict_or_path):
    """Load a bayesian-torch model's weights onto a keras-bayes model.

    The PyTorch model's modules that hold weights, in the order of its
    `state_dict` (the order the modules were created in), are matched with
    the layers of `model` that hold weights, in the model's order:

    - bayesian-torch `Conv1d/2d/3d`, `ConvTranspose1d/2d/3d` and `Linear`
      layers (Reparameterization and Flipout) to keras-bayes layers:
      `mu_kernel` / `mu_weight` to the kernel's posterior mean, and
      `rho_*` to the same standard deviation `sigma = log1p(exp(rho))`,
      which the layer's posterior family stores in its own
      parameterisation;
    - plain `nn.Conv*d`, `nn.ConvTranspose*d`, `nn.Linear` and
      `nn.BatchNorm*d` (running statistics included) to the Keras layers.

    Kernels go from PyTorch's layouts to Keras' (see `_keras_layout`). A
    dense layer fed by a `Flatten` of feature maps gets its input rows
    permuted from PyTorch's channel-major order to Keras' order, so the
    Keras model fed channels-last images (NHWC) computes what the PyTorch
    model computes on NCHW ones. `mu_bias` goes to the bias' posterior
    mean; `rho_bias` to its standard deviation where the layer has a
    mean-field bias posterior, and is otherwise dropped with a warning
    naming it.

    Priors are not in a bayesian-torch `state_dict`: the model keeps the
    priors it was built with. Everything is checked before anything is
    assigned; a mismatch raises a `ValueError` naming the layers and
    shapes and leaves the model unchanged.

    Args:
        model: a built Keras model with the PyTorch model's layers.
        state_dict_or_path: the PyTorch model's `state_dict()` (a mapping of
            names to tensors or arrays), or the path of a file written by
            `torch.save(model.state_dict(), path)` (reading it needs torch).

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        kb.layers.Conv2DReparameterization(8, 3, activation="relu"),
        keras.layers.Flatten(),
        kb.layers.DenseReparameterization(10),
    ])
    kb.migrate.load_bayesian_torch(model, "bnn_state_dict.pt")
    ```
    """
    layers = _plan.weight_layers(model)
    source = state_dict_or_path
    state = _read(source)
    modules = _modules(state)
    label = (
        os.fspath(source)
        if isinstance(source, (str, os.PathLike))
        else ("the state_dict")
    )
    plan = _plan.Plan("load_bayesian_torch", label)
    loader = _Loader(plan)
    names = [prefix or "<root>" for prefix, _ in modules]
    flattens = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.Flatten)
    ]
    if plan.check_count(layers, names, "modules"):
        for layer, (prefix, params) in zip(layers, modules):
            try:
                perm = _flatten_permutation(layer)
            except LookupError:
                perm = None
                if flattens:
                    plan.problem(
                        f"layer '{layer.name}': its input cannot be traced "
                        "to tell whether it follows the Flatten "
                        f"{_plan.describe(flattens)}; build the model "
                        "from a `keras.Input` (Sequential or Functional)"
                    )
            if is_bayesian(layer):
                loader.bayesian(layer, prefix, params, perm)
            else:
                loader.plain(layer, prefix, params, perm)
    plan.apply()
    if loader.dropped:
        listing = ", ".join(
            f"`{key}` (layer '{name}')" for key, name in loader.dropped
        )
        warnings.warn(
            f"load_bayesian_torch: dropped {listing}: the layer has a "
            "deterministic bias, so only `mu_bias` was loaded. Build it "
            "with bias_posterior='mean_field_normal' to keep the bias "
            "posterior.",
            stacklevel=2,
        )
    if loader.priors:
        warnings.warn(
            "load_bayesian_torch: the prior buffers "
            f"{loader.priors} are not loaded; the model keeps the priors "
            "its layers were built with.",
            stacklevel=2,
        )
