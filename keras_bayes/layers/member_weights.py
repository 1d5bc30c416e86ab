"""Initializers, regularizers and constraints applied member by member.

A layer with members (`batch_shape`) holds one variable whose leading axes
are the members. These wrappers make a Keras initializer, regularizer or
constraint act on each member's slice as it would on a separate layer's
weight: fan-based initializers see one member's shape, and members start
different from each other.
"""

import math

import keras
import numpy as np
from keras import ops


def fresh(initializer):
    """A new copy of an unseeded Keras initializer object.

    An unseeded initializer object repeats its values on every call; a copy
    made from its config draws a new seed, so that weights sharing one
    initializer object do not start equal.
    """
    if isinstance(initializer, keras.initializers.Initializer):
        return type(initializer).from_config(initializer.get_config())
    return initializer


class _MemberInitializer:
    """Draws each member's slice with the wrapped initializer on its own."""

    def __init__(self, initializer, batch_shape):
        self.batch_shape = batch_shape
        count = math.prod(batch_shape)
        if not isinstance(initializer, keras.initializers.Initializer):
            self._members = [initializer] * count
            return
        config = initializer.get_config()
        seed = config.get("seed")
        if "seed" not in config or isinstance(
            getattr(initializer, "seed", None), keras.random.SeedGenerator
        ):
            # Deterministic, or advancing its own generator on each call.
            self._members = [initializer] * count
            return
        self._members = []
        for member in range(count):
            if isinstance(seed, int):
                # Reproducible and distinct per member.
                entropy = np.random.SeedSequence([abs(seed), member])
                config = dict(config, seed=int(entropy.generate_state(1)[0]))
            # An unseeded copy made from the config draws a new seed.
            self._members.append(type(initializer).from_config(config))

    def __call__(self, shape, dtype=None):
        member_shape = tuple(shape)[len(self.batch_shape) :]
        values = [
            initializer(member_shape, dtype=dtype)
            for initializer in self._members
        ]
        return ops.reshape(ops.stack(values), shape)


def member_initializer(initializer, batch_shape):
    """`initializer` applied member by member (a fresh copy without members)."""
    if not batch_shape:
        return fresh(initializer)
    return _MemberInitializer(initializer, batch_shape)


class _PerMember:
    """A regularizer (`reduce=True`: summed over members) or a constraint
    (`reduce=False`: results stacked back) applied to each member's slice.
    """

    def __init__(self, function, batch_shape, reduce):
        self.function = function
        self.batch_shape = batch_shape
        self.reduce = reduce

    def __call__(self, weights):
        k = len(self.batch_shape)
        flat = ops.reshape(weights, (-1,) + tuple(weights.shape[k:]))
        results = [
            self.function(flat[member])
            for member in range(math.prod(self.batch_shape))
        ]
        if self.reduce:
            return sum(results)
        return ops.reshape(ops.stack(results), tuple(weights.shape))


# Regularizers that are sums over elements: the same on the whole batch.
_ELEMENTWISE_REGULARIZERS = (
    keras.regularizers.L1,
    keras.regularizers.L2,
    keras.regularizers.L1L2,
)


def member_regularizer(regularizer, batch_shape):
    """`regularizer` summed over members, as for separate layers."""
    if (
        regularizer is None
        or not batch_shape
        or isinstance(regularizer, _ELEMENTWISE_REGULARIZERS)
    ):
        return regularizer
    return _PerMember(regularizer, batch_shape, reduce=True)


def member_constraint(constraint, batch_shape):
    """`constraint` applied member by member, as for separate layers."""
    if constraint is None or not batch_shape:
        return constraint
    return _PerMember(constraint, batch_shape, reduce=False)


def add_member_weight(layer, name, shape, batch_shape):
    """A plain weight `name` of `layer` with per-member wrappers.

    Reads the layer's `<name>_initializer`, `<name>_regularizer` and
    `<name>_constraint` attributes, as Keras layers hold them.
    """
    return layer.add_weight(
        name=name,
        shape=shape,
        initializer=member_initializer(
            getattr(layer, f"{name}_initializer"), batch_shape
        ),
        regularizer=member_regularizer(
            getattr(layer, f"{name}_regularizer"), batch_shape
        ),
        constraint=member_constraint(
            getattr(layer, f"{name}_constraint"), batch_shape
        ),
    )


class PlainWeightArguments:
    """The Keras arguments of plain kernel and bias weights: initializers,
    regularizers and constraints, read, validated and serialized once."""

    def __init__(
        self,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def get_config(self):
        config = super().get_config()
        for weight in ("kernel", "bias"):
            for kind, module in (
                ("initializer", keras.initializers),
                ("regularizer", keras.regularizers),
                ("constraint", keras.constraints),
            ):
                key = f"{weight}_{kind}"
                config[key] = module.serialize(getattr(self, key))
        return config
