"""`kb.to_deterministic`: a plain Keras copy of a Bayesian model at its
posterior mean, for serving and export.

Each Bayesian layer becomes the Keras layer computing what it computes in
mean mode:

- without members, the matching `keras.layers` layer (`Conv2D`,
  `Conv2DTranspose`, `DepthwiseConv2D`, `SeparableConv2D`, `Dense`, ...)
  with its kernels at their posterior means and its bias at its mean;
- with members (`batch_shape`), the matching `kb.layers.Batched*` layer
  holding each member's mean (a separable layer with members becomes a
  batched depthwise convolution followed by a batched 1x1 convolution);
- a rank-1 layer becomes the plain (no members) or batched layer whose
  member kernels are the shared kernel scaled by the factors' means,
  `kernel[..., i, o] * alpha[b, i] * gamma[b, o]`, since
  `f(x * r, W) * s = f(x, W * (r outer s))` for a linear map `f`.

Every other layer is copied with its weights; a `ConvertedBlock` (a
subclassed block that `to_bayesian` made Bayesian) becomes the block
again, with plain layers at the posterior means, and a `MembersInBatch`
(a rank-1 ensemble made by `to_bayesian`) wraps the batched layer.
"""

import dataclasses
import inspect

import keras
import numpy as np

from keras_bayes import _validation
from keras_bayes.conversion import graph, table
from keras_bayes.conversion.blocks import ConvertedBlock
from keras_bayes.layers import batched as batched_layers
from keras_bayes.layers.maps import ConvTransposeMap
from keras_bayes.layers.members_in_batch import MembersInBatch
from keras_bayes.layers.rank1 import Rank1Layer
from keras_bayes.layers.separable import SeparableGeometry
from keras_bayes.workflows import bayesian_layers, is_bayesian


def to_deterministic(model):
    """A copy of `model` with plain layers at the posterior mean.

    The copy computes what `model` computes in mean mode
    (`kb.set_posterior_value(model, "mean")`), at the plain network's
    cost. A model without members (no `batch_shape`) becomes a model of
    `keras.layers` only: it saves to `.keras` and loads with Keras alone,
    and on TensorFlow `copy.export(path)` writes a SavedModel. Layers with
    members become `kb.layers.Batched*` layers (loading those needs
    keras-bayes).

    Args:
        model: a built Sequential or Functional Keras model.

    Returns:
        A new, built model of the same kind (Functional for a subclass of
        Functional); `model` is left as it was.

    Raises:
        ValueError: `model` is not a built Sequential or Functional model,
            or a subclassed layer of it (other than one `to_bayesian`
            made) holds Bayesian layers, which its config would rebuild.

    Example:

    ```python
    serving = kb.to_deterministic(bayesian_model)
    serving.save("serving.keras")  # loads without keras-bayes
    ```
    """
    if not graph.is_model(model) or not model.built:
        raise _validation.invalid(
            "model", "Expected a built Sequential or Functional model.", model
        )
    copier = Copier()
    new_model = copier.clone(model)
    copier.set_weights()
    return new_model


@dataclasses.dataclass
class Means:
    """The posterior means a plain copy of a Bayesian layer takes.

    Attributes:
        original: the Bayesian layer.
        copy: the plain layer.
        values: `{attribute of the copy: NumPy value}`.
    """

    original: object
    copy: object
    values: dict


class Copier(graph.GraphWalker):
    """The cloning rule of `to_deterministic`, and the weights to set.

    A Bayesian layer becomes its plain counterpart (`table.RULES`), a
    `MembersInBatch` wraps the plain counterpart of its layer, and a
    `ConvertedBlock` becomes its block with plain layers; every other layer
    is copied (refused if it holds Bayesian layers that its config would
    make again).
    """

    caller = "to_deterministic"

    def __init__(self):
        super().__init__()
        self.means = []  # Means records, one or two per Bayesian layer

    def replace(self, layer):
        if is_bayesian(layer):
            return self._plain(layer)
        if isinstance(layer, MembersInBatch):
            return MembersInBatch(self._plain(layer.layer), name=layer.name)
        if isinstance(layer, ConvertedBlock):
            return self._unwrap(layer)
        return None

    def copy(self, layer):
        _check_holds_none(layer)
        return super().copy(layer)

    def _plain(self, layer):
        means = _mean_values(layer)
        if isinstance(layer, SeparableGeometry) and layer.batch_shape:
            return self._batched_separable(layer, means)
        cls = _target_class(layer)
        new = cls(**_arguments(layer, cls))
        self.means.append(Means(layer, new, means))
        return new

    def _batched_separable(self, layer, means):
        depthwise_cls = _batched(f"DepthwiseConv{layer.rank}D")
        pointwise_cls = _batched(f"Conv{layer.rank}D")
        depthwise = depthwise_cls(
            **_arguments(
                layer,
                depthwise_cls,
                activation=None,
                use_bias=False,
                name=f"{layer.name}_depthwise",
            )
        )
        pointwise = pointwise_cls(
            **_arguments(
                layer,
                pointwise_cls,
                kernel_size=1,
                strides=1,
                padding="valid",
                dilation_rate=1,
                name=f"{layer.name}_pointwise",
            )
        )
        self.means.append(
            Means(layer, depthwise, {"kernel": means["depthwise_kernel"]})
        )
        pointwise_means = {"kernel": means["pointwise_kernel"]}
        if "bias" in means:
            pointwise_means["bias"] = means["bias"]
        self.means.append(Means(layer, pointwise, pointwise_means))
        return keras.Sequential([depthwise, pointwise], name=layer.name)

    def _unwrap(self, wrapper):
        block = wrapper.layer
        copy = graph.copy_layer(block, self.caller)
        inner = block._flatten_layers(include_self=False)
        copied = copy._flatten_layers(include_self=False)
        self.record(block, copy, "own")
        for old, new in zip(inner, copied, strict=True):
            if not is_bayesian(old):
                self.record(old, new, "own")
                continue
            expected = _target_class(old)
            if type(new) is not expected:
                raise ValueError(
                    f"to_deterministic cannot convert layer '{old.name}' "
                    f"inside '{wrapper.name}': the block's config makes a "
                    f"{type(new).__name__} where a {expected.__name__} "
                    "is needed."
                )
            self.means.append(Means(old, new, _mean_values(old)))
        if not graph.config_rebuilds(block):
            # Its config holds keys its class refuses (keras-hub's
            # ViTPatchingAndEmbedding): the wrapper saves one that loads.
            return ConvertedBlock(
                copy, [], name=wrapper.name, trainable=wrapper.trainable
            )
        return copy

    def set_weights(self):
        """Once the copy is built: plain weights, then the means."""
        self.copy_plain_weights()
        for record in self.means:
            for attribute, value in record.values.items():
                variable = getattr(record.copy, attribute)
                if tuple(variable.shape) != value.shape:
                    raise ValueError(
                        f"to_deterministic cannot set '{attribute}' of "
                        f"layer '{record.original.name}': shape "
                        f"{value.shape}, expected {tuple(variable.shape)}."
                    )
                variable.assign(value)


def _check_holds_none(layer):
    held = bayesian_layers(layer)
    if held:
        names = ", ".join(f"'{inner.name}'" for inner in held)
        raise ValueError(
            f"to_deterministic cannot convert layer '{layer.name}' "
            f"({type(layer).__name__}): it holds Bayesian layers ({names}) "
            "that its config would make again. Write the block with "
            "`keras.layers` inside, or convert it with `to_bayesian`, "
            "whose blocks `to_deterministic` can undo."
        )


def _rule(layer):
    rule = table.rule_of_bayesian(layer)
    if rule is None:
        raise ValueError(
            f"to_deterministic has no plain layer for layer '{layer.name}' "
            f"({type(layer).__name__})."
        )
    return rule


def _batched(name):
    return getattr(batched_layers, "Batched" + name)


def _target_class(layer):
    """The plain class computing `layer`'s mean mode: the Keras class, or
    with members the batched one."""
    rule = _rule(layer)
    if not layer.batch_shape:
        return rule.keras_class
    cls = rule.batched_class()
    if cls is None:
        raise ValueError(
            f"to_deterministic has no plain layer for layer '{layer.name}' "
            f"({type(layer).__name__}) with members: keras_bayes.layers "
            f"has no Batched{rule.stem}."
        )
    return cls


def _arguments(layer, cls, **overrides):
    """The constructor arguments of `cls` that `layer`'s config holds."""
    accepted = inspect.signature(cls.__init__).parameters
    arguments = {
        key: value
        for key, value in layer.get_config().items()
        if key in accepted and key not in ("self", "kwargs")
    }
    arguments.update(
        name=layer.name, dtype=layer.dtype_policy, trainable=layer.trainable
    )
    arguments.update(overrides)
    return arguments


def _mean_values(layer):
    """`{Keras attribute: value}` of the plain layer computing `layer`'s
    mean mode."""
    if isinstance(layer, Rank1Layer):
        values = {"kernel": _folded_kernel(layer)}
        if layer.use_bias:
            values["bias"] = graph.numpy(layer.bias)
        return values
    return {weight.name: weight.mean() for weight in layer.posterior_weights}


def _folded_kernel(layer):
    """Each member's kernel with the rank-1 factors' means folded in."""
    kernel = graph.numpy(layer.kernel)
    means = {w.name: w.mean() for w in layer.posterior_weights}
    alpha, gamma = means["alpha"], means["gamma"]  # batch_shape + (C,)
    members = alpha.shape[:-1]
    spatial = (1,) * (kernel.ndim - 2)
    if isinstance(layer._map, ConvTransposeMap):  # (..., out, in)
        factors = gamma[..., :, None] * alpha[..., None, :]
    else:  # (..., in / groups, out)
        in_per_group, out = kernel.shape[-2:]
        groups = getattr(layer._map, "groups", 1)
        group_of_output = np.arange(out) // (out // groups)
        rows = group_of_output[None, :] * in_per_group
        rows = rows + np.arange(in_per_group)[:, None]  # (in/groups, out)
        factors = alpha[..., rows] * gamma[..., None, :]
    factors = factors.reshape(members + spatial + factors.shape[-2:])
    return (kernel * factors).astype(kernel.dtype)
