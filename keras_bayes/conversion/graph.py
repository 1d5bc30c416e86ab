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
import inspect

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
    """A copy of `layer` from its config, or `layer` itself if it holds no
    weights and cannot be rebuilt from its config.

    The copy is unbuilt, unless `layer` makes layers in its `build` (as
    `MultiHeadAttention` and keras-hub's transformer blocks do): then the
    copy is built from `layer`'s build config, so that it holds the same
    layers as `layer` (their weights are set later).
    """
    try:
        new = from_config(type(layer), layer.get_config())
    except NOT_CLONABLE as error:
        if not layer.weights:
            return layer  # nothing to copy: sharing it changes nothing
        raise ValueError(
            f"{caller} cannot copy layer '{layer.name}' "
            f"({type(layer).__name__}) from its config: "
            f"{type(error).__name__}: {error}"
        ) from error
    if _makes_layers_in_build(layer, new):
        try:
            new.build_from_config(layer.get_build_config())
        except Exception:  # noqa: BLE001 - any failure of a foreign build
            # A build that needs more than the recorded shapes: the copy
            # builds on its first call instead, and a selected layer it
            # makes there is named in the conversion's warning.
            new = from_config(type(layer), layer.get_config())
    return new


def _makes_layers_in_build(original, copy):
    return (
        original.built
        and not copy.built
        and original.get_build_config() is not None
        and len(copy._flatten_layers(include_self=False))
        < len(original._flatten_layers(include_self=False))
    )


def from_config(cls, config):
    """`cls.from_config(config)`, tolerating config keys that `cls`'s
    constructor refuses when they are derived from the others (`rebuild`)."""
    return rebuild(cls, config)[0]


def rebuild(cls, config):
    """`(cls.from_config(c), c)`: `c` is `config`, or `config` less the
    keys that `cls`'s constructor refuses when they are derived ones.

    keras-hub 0.32's `ViTPatchingAndEmbedding` writes `num_patches` and
    `num_positions` into its config but does not take them. When
    `from_config` raises a TypeError, it is called again without the keys
    that no `__init__` of the class names; that copy is kept only if its
    own config has every dropped key at `config`'s value (they were
    derived), else the first error is raised.
    """
    try:
        return cls.from_config(config), config
    except TypeError as error:
        accepted = _constructor_arguments(cls)
        trimmed = {k: v for k, v in config.items() if k in accepted}
        if len(trimmed) == len(config):
            raise
        try:
            new = cls.from_config(trimmed)
        except TypeError:
            raise error from None
        derived = new.get_config()
        dropped = set(config) - set(trimmed)
        if any(derived.get(key) != config[key] for key in dropped):
            raise error from None
        return new, trimmed


def config_rebuilds(layer):
    """Whether `type(layer).from_config(layer.get_config())` works, as
    loading a saved model needs."""
    try:
        type(layer).from_config(layer.get_config())
    except NOT_CLONABLE:
        return False
    return True


def _constructor_arguments(cls):
    names = set()
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is not None:
            names.update(inspect.signature(init).parameters)
    return names - {"self", "args", "kwargs"}


def own_weights(layer):
    """The variables that `layer` itself makes, not the layers it holds."""
    held = {
        id(variable)
        for inner in layer._flatten_layers(include_self=False)
        for variable in inner.weights
    }
    return [v for v in layer.weights if id(v) not in held]
