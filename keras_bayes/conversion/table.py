"""The one rule table between Keras layer classes and keras-bayes ones.

One `Rule` per Keras class says how a layer of that class and a Bayesian
layer computing the same map correspond, both ways:

- Keras -> keras-bayes (`to_bayesian`): the keras-bayes class is the Keras
  class name plus an estimator suffix (`keras.layers.Conv2D` becomes
  `kb.layers.Conv2DFlipout`, `Conv2DReparameterization` or `Conv2DRank1`);
  the rule lists the constructor arguments carried over, the kernels
  (Keras attribute, keras-bayes posterior weight) and the arguments a
  Bayesian layer has no place for.
- keras-bayes -> Keras (`to_deterministic`): a Bayesian layer belongs to
  the rule whose geometry mixin and rank it has (so every estimator,
  local reparameterization and rank-1 included, maps back); without
  members it becomes the Keras class, with members the
  `kb.layers.Batched<Keras class name>` layer.

The Bayesian classes are looked up by name on `kb.layers` when a model is
converted, so a rule whose class this version does not have makes its Keras
layer unconvertible (and named in the conversion's warning) rather than
failing at import.

Adding a rule: put one more `Rule` in the tuple that `RULES` is made
from (`RULES` maps each Keras class to its rule). For a Bayesian
`EinsumDense` (classes `EinsumDenseFlipout`, `EinsumDenseReparameterization`
and `EinsumDenseRank1` on `kb.layers`, with a geometry mixin, say
`EinsumDenseGeometry`, whose `rank` is None)::

    Rule(
        keras.layers.EinsumDense,
        EinsumDenseGeometry,
        rank=None,
        arguments=("equation", "output_shape", "bias_axes", "activation"),
        kernels=(("kernel", "kernel"),),
        unsupported=_KERNEL_UNSUPPORTED,
    )

- `arguments`: the Keras config keys the Bayesian constructor takes, all
  of them (`Rule` adds none; `_rules` adds `activation` and `use_bias`).
- `kernels`: each Keras kernel attribute and the name of the Bayesian
  layer's posterior weight (`declare_weight`) that takes it; a Keras
  `bias` attribute that is not None goes to the posterior weight `"bias"`.
  Each posterior is set through its family (`VariationalLayer
  .set_from_point`, MOPED).
- Back to Keras, `to_deterministic` builds `keras_class` from the keys of
  the Bayesian layer's config that its constructor accepts, and sets each
  of its attributes named like a posterior weight to that weight's mean:
  the Bayesian layer's config keys and weight names must be the Keras
  ones. With members it builds `kb.layers.Batched<Keras name>`, and
  refuses the layer, naming it, where there is no such class.
- A Bayesian layer matches the first rule whose `geometry` it is an
  instance of with the same `rank`: the geometry must be its own class,
  not a parent of another rule's.
"""

import dataclasses

import keras

from keras_bayes import layers as bayesian_layers
from keras_bayes.layers.geometry import (
    ConvGeometry,
    ConvTransposeGeometry,
    DenseGeometry,
    DepthwiseGeometry,
    EinsumGeometry,
)
from keras_bayes.layers.separable import SeparableGeometry

# `to_bayesian`'s `estimator` -> the suffix of the keras-bayes class names.
CLASS_SUFFIXES = {
    "flipout": "Flipout",
    "reparameterization": "Reparameterization",
    "rank1": "Rank1",
}


@dataclasses.dataclass(frozen=True)
class Rule:
    """How one Keras layer class and its Bayesian counterparts correspond.

    Args:
        keras_class: the Keras class (its name is the keras-bayes stem).
        geometry: the geometry mixin of the keras-bayes classes.
        rank: the spatial rank (`layer.rank`), None for dense layers.
        arguments: config keys passed on to the Bayesian constructor.
        kernels: `(Keras attribute, keras-bayes posterior weight name)`.
        unsupported: config keys that are dropped, with a warning, when set.
    """

    keras_class: type
    geometry: type
    rank: object
    arguments: tuple
    kernels: tuple
    unsupported: tuple

    @property
    def stem(self):
        return self.keras_class.__name__

    def class_name(self, estimator):
        return self.stem + CLASS_SUFFIXES[estimator]

    def bayesian_class(self, estimator):
        """The keras-bayes class for `estimator`, or None if it is missing."""
        return getattr(bayesian_layers, self.class_name(estimator), None)

    def batched_class(self):
        """`kb.layers.Batched<Keras name>`, or None if there is none."""
        return getattr(bayesian_layers, "Batched" + self.stem, None)

    def holds(self, bayesian_layer):
        """Whether `bayesian_layer` computes this rule's Keras map."""
        return (
            isinstance(bayesian_layer, self.geometry)
            and bayesian_layer.rank == self.rank
        )


_GEOMETRY = ("kernel_size", "strides", "padding", "data_format")
_CONV = ("filters", *_GEOMETRY, "dilation_rate", "groups")
_CONV_TRANSPOSE = ("filters", *_GEOMETRY, "output_padding", "dilation_rate")
_DEPTHWISE = (*_GEOMETRY, "depth_multiplier", "dilation_rate")
_SEPARABLE = ("filters", *_DEPTHWISE)
_OUTPUT = ("activation", "use_bias")

_KERNEL = (("kernel", "kernel"),)
_KERNEL_UNSUPPORTED = (
    "kernel_regularizer",
    "bias_regularizer",
    "kernel_constraint",
    "bias_constraint",
)
_DEPTHWISE_UNSUPPORTED = (
    "depthwise_regularizer",
    "bias_regularizer",
    "depthwise_constraint",
    "bias_constraint",
)
_SEPARABLE_UNSUPPORTED = (
    *_DEPTHWISE_UNSUPPORTED,
    "pointwise_regularizer",
    "pointwise_constraint",
)


def _rules(geometry, arguments, classes, **fields):
    """One rule per `(Keras class, rank)` of one geometry."""
    fields.setdefault("kernels", _KERNEL)
    fields.setdefault("unsupported", _KERNEL_UNSUPPORTED)
    return [
        Rule(cls, geometry, rank, (*arguments, *_OUTPUT), **fields)
        for cls, rank in classes
    ]


_L = keras.layers
# Keras class -> its rule.
RULES = {
    rule.keras_class: rule
    for rule in (
        *_rules(DenseGeometry, ("units",), [(_L.Dense, None)]),
        # `EinsumDense` has no `use_bias`: a bias exists with `bias_axes`.
        Rule(
            _L.EinsumDense,
            EinsumGeometry,
            rank=None,
            arguments=("equation", "output_shape", "bias_axes", "activation"),
            kernels=_KERNEL,
            unsupported=_KERNEL_UNSUPPORTED,
        ),
        *_rules(
            ConvGeometry,
            _CONV,
            [(_L.Conv1D, 1), (_L.Conv2D, 2), (_L.Conv3D, 3)],
        ),
        *_rules(
            ConvTransposeGeometry,
            _CONV_TRANSPOSE,
            [
                (_L.Conv1DTranspose, 1),
                (_L.Conv2DTranspose, 2),
                (_L.Conv3DTranspose, 3),
            ],
        ),
        # Keras names the depthwise kernel `kernel` in DepthwiseConv layers.
        *_rules(
            DepthwiseGeometry,
            _DEPTHWISE,
            [(_L.DepthwiseConv1D, 1), (_L.DepthwiseConv2D, 2)],
            unsupported=_DEPTHWISE_UNSUPPORTED,
        ),
        # With members, `to_deterministic` splits a separable layer into a
        # batched depthwise and a batched 1x1 convolution (no batched
        # separable class).
        *_rules(
            SeparableGeometry,
            _SEPARABLE,
            [(_L.SeparableConv1D, 1), (_L.SeparableConv2D, 2)],
            kernels=(
                ("depthwise_kernel", "depthwise_kernel"),
                ("pointwise_kernel", "pointwise_kernel"),
            ),
            unsupported=_SEPARABLE_UNSUPPORTED,
        ),
    )
}
del _L

CLASS_NAMES = sorted(cls.__name__ for cls in RULES)


def rule_of_keras(layer):
    """The rule of the Keras class `layer` is an instance of, or None.

    A subclass of a Keras layer counts (it holds the same kernels), but
    only the exact class is converted: a subclass may compute something
    else, which its Bayesian counterpart would not reproduce.
    """
    for cls in type(layer).__mro__:
        if cls in RULES:
            return RULES[cls]
    return None


def rule_of_bayesian(layer):
    """The rule whose Keras map the Bayesian `layer` computes, or None."""
    for rule in RULES.values():
        if rule.holds(layer):
            return rule
    return None
