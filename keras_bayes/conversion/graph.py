"""Copy a Keras model layer by layer, making the selected layers Bayesian.

The copy is `keras.models.clone_model` with a clone function that:

- converts a selected Conv / Dense / Depthwise / Separable layer into its
  keras-bayes counterpart (the weights are set once the copy is built);
- copies every other layer from its config, and the `keras.ops`
  operations of a functional graph (`x + y`, `ops.mean`, ...), which are
  not layers and hold no weights;
- copies nested Sequential and Functional models the same way;
- inside a subclassed layer that holds convertible layers (a residual
  block), puts Bayesian layers at the copy's attributes, when the copy
  made its layers in its constructor as the original did, and wraps the
  copy in a `ConvertedBlock` (see `blocks.py`).

Every layer it cannot convert is recorded with the reason, for the one
warning that `to_bayesian` gives.
"""

import collections

import keras
import numpy as np
from keras import ops
from keras.src.models.functional import Functional

from keras_bayes import posteriors
from keras_bayes.conversion import blocks, table
from keras_bayes.layers.members_in_batch import MembersInBatch
from keras_bayes.layers.rank1 import Rank1Layer


def moped_untransformed_scale(weights, moped_delta):
    """The `untransformed_scale` for which `scale = moped_delta * |w|`.

    MOPED (Krishnan et al. 2020). Weights at exactly zero get the smallest
    representable scale (the `1e-5` floor of the posterior).

    Args:
        weights: array-like, the trained weights.
        moped_delta: the relative scale, a positive number.
    """
    scale = moped_delta * abs(_numpy(weights).astype("float64"))
    return posteriors.MeanFieldNormal.inverse_scale(scale)


def _numpy(value):
    if isinstance(value, keras.Variable):
        value = value.value
    return ops.convert_to_numpy(value)


def is_model(layer):
    return isinstance(layer, (keras.Sequential, Functional))


class Converter:
    """The clone function of `to_bayesian`, and what it did.

    Args:
        selected: ids of the original layers to convert.
        estimator: `"flipout"`, `"reparameterization"` or `"rank1"`.
        bayesian_arguments: keyword arguments of every new Bayesian layer
            (prior, `kl_weight`, `posterior_value`; `batch_shape` for
            rank-1 layers, which are wrapped in `MembersInBatch`).
        seed: seed of the first new layer (the next ones count up), or None.
    """

    def __init__(self, selected, estimator, bayesian_arguments, seed):
        self.selected = selected
        self.estimator = estimator
        self.bayesian_arguments = bayesian_arguments
        self.seed = seed
        self.returned = {}  # id(original) -> what the copy calls instead
        # id(original) -> (original, plain copy, whose weights to copy:
        # "all", or "own" where the layers it holds are paired one by one)
        self.copies = {}
        # (original, Bayesian layer, rule, arguments dropped, replaced copy)
        self.converted = []
        self.unconverted = []  # (original, reason)

    # -- the clone function ---------------------------------------------

    def __call__(self, layer):
        if id(layer) in self.returned:
            return self.returned[id(layer)]
        if not isinstance(layer, keras.layers.Layer):
            new = copy_operation(layer)
        elif is_model(layer):
            new = keras.models.clone_model(layer, clone_function=self)
            self.copies[id(layer)] = (layer, new, "own")
        else:
            new = self._convert(layer) if id(layer) in self.selected else None
            if new is None:
                copy = copy_layer(layer)
                self.copies[id(layer)] = (layer, copy, "all")
                new = self._convert_inside(layer, copy)
        self.returned[id(layer)] = new
        return new

    def _convert(self, layer, replaced=None):
        """A Bayesian copy of `layer`, or None (the reason recorded)."""
        kind = table.kind_of(layer)
        rule = table.RULES[kind]
        cls = rule.bayesian_class(self.estimator)
        if type(layer) is not kind:
            self._refuse(layer, f"a subclass of keras.layers.{kind.__name__}")
            return None
        if cls is None:
            name = rule.class_name(self.estimator)
            self._refuse(
                layer, f"keras_bayes.layers has no {name} in this version"
            )
            return None
        if getattr(layer, "quantization_mode", None):
            self._refuse(layer, f"quantized ({layer.quantization_mode})")
            return None
        config = layer.get_config()
        seed = None if self.seed is None else self.seed + len(self.converted)
        new = cls(
            **{key: config[key] for key in rule.arguments},
            **self.bayesian_arguments,
            **_UNINITIALISED.get(self.estimator, {}),
            seed=seed,
            activity_regularizer=layer.activity_regularizer,
            name=layer.name,
            dtype=config.get("dtype"),
            trainable=layer.trainable,
        )
        dropped = [key for key in rule.unsupported if config.get(key)]
        self.converted.append((layer, new, rule, dropped, replaced))
        if isinstance(new, Rank1Layer):
            # The copy carries the members in the batch axis.
            return MembersInBatch(new, name=layer.name)
        return new

    def _refuse(self, layer, reason):
        self.unconverted.append((layer, reason))

    # -- layers inside subclassed layers ----------------------------------

    def _convert_inside(self, original, copy):
        """Put Bayesian layers in a subclassed layer's copy, where it can."""
        inner = original._flatten_layers(include_self=False)
        targets = [layer for layer in inner if id(layer) in self.selected]
        if not targets:
            return copy
        copied = copy._flatten_layers(include_self=False)
        if len(copied) != len(inner) or any(
            type(a) is not type(b) for a, b in zip(inner, copied)
        ):
            # The copy makes its layers later (in `build`) or differently.
            for layer in targets:
                self._refuse(layer, _inside(original, "creates it in build"))
            return copy
        groups, pairs = [], {id(original): (original, copy, "own")}
        for old, new in zip(inner, copied):
            pairs[id(old)] = (old, new, "own")
            if id(old) not in self.selected:
                continue
            paths = blocks.find_paths(copy, new)
            if not paths:
                reason = "calls it other than through an attribute"
                self._refuse(old, _inside(original, reason))
                continue
            bayesian = self._convert(old, replaced=new)
            if bayesian is None:
                continue
            for path in paths:
                blocks.set_path(copy, path, bayesian)
            del pairs[id(old)]
            groups.append(paths)
        if not groups:
            return copy
        self.copies.update(pairs)
        return blocks.ConvertedBlock(
            copy, groups, name=original.name, trainable=original.trainable
        )

    # -- once the copy is built -------------------------------------------

    def check_replacements(self):
        """A replaced inner layer must be unused, its Bayesian one used."""
        for original, new, _, _, replaced in self.converted:
            if replaced is None:
                continue
            if replaced.built or not new.built:
                raise ValueError(
                    f"to_bayesian cannot convert layer '{original.name}': "
                    "the layer holding it also calls it through a reference "
                    "that cannot be replaced. Leave it out with `layers=`."
                )

    def copy_weights(self, moped_delta):
        """Set every copied layer's weights, and the posteriors (MOPED)."""
        copy_plain_weights(self.copies.values(), "to_bayesian")
        for original, new, rule, _, _ in self.converted:
            if isinstance(new, Rank1Layer):
                _set_rank1(original, new)
                continue
            _default_posterior(new)
            for attribute, prefix in rule.kernels:
                kernel = _numpy(getattr(original, attribute))
                getattr(new, f"{prefix}_loc").assign(kernel)
                getattr(new, f"{prefix}_untransformed_scale").assign(
                    moped_untransformed_scale(kernel, moped_delta)
                )
            if original.use_bias:
                new.bias_loc.assign(_numpy(original.bias))

    def copy_trainable_flags(self, model, new_model):
        """Each copy gets its original's `trainable`, outer layers first."""
        pairs = collections.defaultdict(list)  # id(original) -> copies

        def pair(original_id, copy):
            if all(copy is not known for known in pairs[original_id]):
                pairs[original_id].append(copy)

        pair(id(model), new_model)
        for key, new in self.returned.items():
            if isinstance(new, keras.layers.Layer):
                pair(key, new)  # a ConvertedBlock before the block it holds
        for original, copy, which in self.copies.values():
            pair(id(original), copy)
            if which == "all":
                # Copied whole: pair the layers it holds, now built.
                inner = original._flatten_layers(include_self=False)
                copied = copy._flatten_layers(include_self=False)
                if [type(a) for a in inner] == [type(b) for b in copied]:
                    for a, b in zip(inner, copied):
                        pair(id(a), b)
        for original, new, *_ in self.converted:
            pair(id(original), new)
        # `_flatten_layers` lists a layer before the layers it holds, so an
        # inner flag set after its holder's (which sets every inner one) wins.
        for layer in model._flatten_layers(include_self=True):
            for copy in pairs.get(id(layer), ()):
                if copy.trainable != layer.trainable:
                    copy.trainable = layer.trainable


def _inside(holder, why):
    return f"held by '{holder.name}' ({type(holder).__name__}), which {why}"


# The kernels' posterior variables are set from the trained kernels once the
# copy is built: creating them with zeros skips drawing two random numbers per
# weight (a third of the conversion of VGG16's dense layers). The layers get
# the default posterior back before their weights are set.
_UNINITIALISED = {
    estimator: {
        "kernel_posterior": posteriors.MeanFieldNormal(
            loc_initializer="zeros", untransformed_scale_initializer="zeros"
        )
    }
    for estimator in ("flipout", "reparameterization")
}


def _default_posterior(layer):
    """Give a converted layer the default kernel posterior (its config and
    declared weights say so); the variables are kept."""
    posterior = posteriors.MeanFieldNormal()
    layer.kernel_posterior = posterior
    for weight in layer.posterior_weights:
        if weight.posterior is not None and weight.name != "bias":
            weight.posterior = posterior


def _set_rank1(original, new):
    """The shared kernel is the trained one, each member's bias the trained
    bias; the factors keep their initial values, centred on 1."""
    new.kernel.assign(_numpy(original.kernel))
    if original.use_bias:
        bias = _numpy(original.bias)
        new.bias.assign(np.broadcast_to(bias, tuple(new.bias.shape)))


def copy_plain_weights(copies, caller):
    """Give each copy its original's weights, once the copies are built.

    Args:
        copies: `(original, copy, which)` triples; `which` is `"all"` (the
            copy's weights, those of the layers it holds included) or
            `"own"` (only the variables the layer makes itself; the layers
            it holds are paired one by one). Models are skipped: their
            layers are paired one by one.
        caller: the public function's name, for the error message.
    """
    for original, copy, which in copies:
        if is_model(copy):
            continue
        if which == "all":
            targets, sources = copy.weights, original.weights
        else:
            targets, sources = _own_weights(copy), _own_weights(original)
        if [tuple(v.shape) for v in targets] != [
            tuple(v.shape) for v in sources
        ]:
            raise ValueError(
                f"{caller} cannot copy the weights of layer "
                f"'{original.name}' ({type(original).__name__}): its "
                "copy, made from its config, has weights of other shapes."
            )
        for target, source in zip(targets, sources):
            target.assign(source.value)


def copy_operation(operation):
    """A `keras.ops` operation of a functional graph (no state to copy)."""
    try:
        return type(operation).from_config(operation.get_config())
    except Exception:  # an operation without a config: sharing it is safe
        return operation


def copy_layer(layer, caller="to_bayesian"):
    """A copy of `layer` from its config (unbuilt), or `layer` itself if it
    holds no weights and has no config."""
    try:
        return type(layer).from_config(layer.get_config())
    except Exception as error:
        if not layer.weights:
            return layer  # nothing to copy: sharing it changes nothing
        raise ValueError(
            f"{caller} cannot copy layer '{layer.name}' "
            f"({type(layer).__name__}) from its config: "
            f"{type(error).__name__}: {error}"
        ) from error


def _own_weights(layer):
    """The variables that `layer` itself makes, not the layers it holds."""
    held = {
        id(variable)
        for inner in layer._flatten_layers(include_self=False)
        for variable in inner.weights
    }
    return [v for v in layer.weights if id(v) not in held]
