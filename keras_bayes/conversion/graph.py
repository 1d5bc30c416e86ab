"""The one model-cloning machinery of `to_bayesian` and `to_deterministic`.

A `GraphWalker` is the clone function of `keras.models.clone_model`. It
walks the model once, remembering what it returned for each original (a
layer called twice is copied once), and:

- copies the `keras.ops` operations of a functional graph (`x + y`,
  `ops.mean`, ...), which are not layers and hold no weights;
- copies nested Sequential and Functional models the same way, with
  itself as their clone function;
- asks its `replace` rule for every other layer (the layer the copy calls
  instead: a Bayesian or a plain counterpart, from the rule table
  `table.RULES`), and copies the layers the rule leaves alone from their
  config (`copy`).

Each copy is recorded as a `Copy`, whose weights `copy_plain_weights` sets
once the new model is built (a copy from a config is unbuilt). The
subclasses are the two directions: `convert.Converter` (Keras ->
keras-bayes) and `deterministic.Copier` (keras-bayes -> Keras).
"""

import dataclasses

import keras
from keras import ops
from keras.src.models.functional import Functional

# What `from_config(get_config())` raises for an object that cannot be
# rebuilt from its config: Keras' `get_config` of an operation made with
# arguments it cannot serialise raises NotImplementedError, and
# `from_config` reports any constructor failure as a TypeError.
NOT_CLONABLE = (NotImplementedError, TypeError)


def is_model(layer):
    return isinstance(layer, (keras.Sequential, Functional))


def numpy(value):
    """A variable's or tensor's value as a NumPy array."""
    if isinstance(value, keras.Variable):
        value = value.value
    return ops.convert_to_numpy(value)


@dataclasses.dataclass
class Copy:
    """A copy whose weights are its original's.

    Attributes:
        original: the layer copied.
        copy: its copy (unbuilt until the new model is).
        which: `"all"` (the copy's weights, those of the layers it holds
            included) or `"own"` (only the variables the layer makes
            itself; the layers it holds are paired one by one).
    """

    original: object
    copy: object
    which: str


class GraphWalker:
    """The clone function: memo, dispatch, and the copies made.

    Subclasses set `caller` (the public function, for error messages) and
    override `replace`, and `copy` where a copied layer needs more work.
    """

    caller = None

    def __init__(self):
        self.returned = {}  # id(original) -> what the copy calls instead
        self.copies = {}  # id(original) -> Copy

    def clone(self, model):
        """The copy of the model `model`."""
        return keras.models.clone_model(model, clone_function=self)

    def __call__(self, layer):
        if id(layer) in self.returned:
            return self.returned[id(layer)]
        if not isinstance(layer, keras.layers.Layer):
            new = copy_operation(layer)
        elif is_model(layer):
            new = self.clone(layer)
            self.record(layer, new, "own")
        else:
            new = self.replace(layer)
            if new is None:
                new = self.copy(layer)
        self.returned[id(layer)] = new
        return new

    def replace(self, layer):
        """The layer the copy calls instead of `layer`, or None to copy it."""
        return None

    def copy(self, layer):
        """A copy of `layer` from its config, its weights set later."""
        new = copy_layer(layer, self.caller)
        self.record(layer, new, "all")
        return new

    def record(self, original, copy, which):
        self.copies[id(original)] = Copy(original, copy, which)

    def copy_plain_weights(self):
        """Give each copy its original's weights, once the copies are built.

        Models are skipped: their layers are paired one by one.
        """
        for record in self.copies.values():
            original, copy = record.original, record.copy
            if is_model(copy):
                continue
            if record.which == "all":
                targets, sources = copy.weights, original.weights
            else:
                targets, sources = own_weights(copy), own_weights(original)
            if [tuple(v.shape) for v in targets] != [
                tuple(v.shape) for v in sources
            ]:
                raise ValueError(
                    f"{self.caller} cannot copy the weights of layer "
                    f"'{original.name}' ({type(original).__name__}): its "
                    "copy, made from its config, has weights of other shapes."
                )
            for target, source in zip(targets, sources):
                # A copy of the value: on JAX an assigned array is shared,
                # and a compiled step of one model donates (frees) the
                # buffers of its variables, the other model's included.
                target.assign(ops.copy(source.value))


def copy_operation(operation):
    """A `keras.ops` operation of a functional graph (no state to copy)."""
    try:
        return type(operation).from_config(operation.get_config())
    except NOT_CLONABLE:  # no config: sharing it is safe (no state)
        return operation


def copy_layer(layer, caller):
    """A copy of `layer` from its config (unbuilt), or `layer` itself if it
    holds no weights and cannot be rebuilt from its config."""
    try:
        return type(layer).from_config(layer.get_config())
    except NOT_CLONABLE as error:
        if not layer.weights:
            return layer  # nothing to copy: sharing it changes nothing
        raise ValueError(
            f"{caller} cannot copy layer '{layer.name}' "
            f"({type(layer).__name__}) from its config: "
            f"{type(error).__name__}: {error}"
        ) from error


def own_weights(layer):
    """The variables that `layer` itself makes, not the layers it holds."""
    held = {
        id(variable)
        for inner in layer._flatten_layers(include_self=False)
        for variable in inner.weights
    }
    return [v for v in layer.weights if id(v) not in held]
