"""`kb.to_bayesian`: a Bayesian copy of a trained Keras model (MOPED).

The copy is made by the cloning machinery (`graph.GraphWalker`) with the
`Converter` rule: a selected Conv / Dense / Depthwise / Separable layer
becomes its keras-bayes counterpart (`table.RULES`), built with
zero-initialised posteriors and set once the copy is built (MOPED,
through the posterior family); inside a subclassed layer that holds
selected layers (a residual block, `MultiHeadAttention`, a transformer
block), Bayesian layers are put at the copy's attributes, once the copy
holds the layers the original holds (made in its constructor, or in its
`build`, replayed from the original's build config, `graph.copy_layer`),
and the copy is wrapped in a `ConvertedBlock` (`blocks.py`).
Every layer it cannot convert is recorded with the reason, for the one
warning that `to_bayesian` gives.
"""

import collections

import keras
import numpy as np
from keras.src.models.functional import Functional

from keras_bayes import _validation, posteriors
from keras_bayes.conversion import (
    blocks,
    ensemble,
    graph,
    report,
    selection,
    table,
)
from keras_bayes.layers.members_in_batch import (
    MembersInBatch,
)
from keras_bayes.layers.rank1 import Rank1Layer


def to_bayesian(
    model,
    estimator="flipout",
    moped_delta=0.1,
    prior="normal",
    kl_weight=1.0,
    posterior_value="sample",
    seed=None,
    layers=None,
    ensemble_size=None,
):
    """A copy of `model` whose convolution and dense layers are Bayesian.

    Keras `Dense`, `EinsumDense`, `Conv1D/2D/3D`, `Conv1D/2D/3DTranspose`,
    `DepthwiseConv1D/2D` and `SeparableConv1D/2D` layers become the matching
    keras-bayes layer, wherever they are: in the model's graph, in nested
    Sequential and Functional models, or inside subclassed layers (residual
    blocks, `MultiHeadAttention`, keras-hub's transformer blocks) that make
    them in their constructor or in `build`. Every argument is carried
    over (strides, padding, groups, dilation, depth multiplier, output
    padding, data format, activation, use_bias); each kernel's posterior
    mean is the trained kernel and its scale `moped_delta * |w|` (MOPED,
    Krishnan et al. 2020); biases stay point estimates at their trained
    values. Every other layer and every `keras.ops` operation is copied,
    with its weights and its `trainable` flag. In mean mode the copy
    computes what `model` computes.

    Nothing is left deterministic without a word: layers holding weights
    that the conversion cannot reach (a subclass of a Keras convolution, a
    layer a subclassed layer makes in `build` without a build config to
    replay, a kind keras-bayes does not have in this version) are named
    in one `UserWarning`, with their parameter counts; so are regularizers
    and constraints, which the Bayesian layers do not take.

    Args:
        model: a built Sequential or Functional Keras model.
        estimator: `"flipout"`, `"reparameterization"`, or `"rank1"`: a
            rank-1 ensemble of `ensemble_size` members (below).
        moped_delta: relative posterior scale, a positive number.
        prior: kernel prior of the new layers (a `kb.priors` object, its
            name, or None).
        kl_weight: `kl_weight` of the new layers, e.g. `1 / num_train`.
        posterior_value: `"sample"` or `"mean"`.
        seed: int seed; layer `i` gets `seed + i`. None for random seeds.
        layers: which layers to convert. None: every convertible layer. A
            list of layer names and/or layer classes: the layers with these
            names (a nested model's or block's name selects every
            convertible layer inside it) and the layers of these classes.
            A callable: called with each convertible layer of the original
            model, returns True to convert it.
        ensemble_size: with `estimator="rank1"` (and only then), the number
            of members `K`, a positive int. Conv, transposed conv and dense
            layers become `kb.layers.*Rank1` layers with
            `batch_shape=(K,)`: the shared kernel is the trained kernel,
            each member's bias the trained bias, the factors start at their
            posterior's initial values (centred on 1, spread 0.1);
            `moped_delta` and `prior` are not used (the factors take the
            rank-1 prior N(1, 0.1)). Depthwise and separable layers, which
            have no rank-1 class, stay deterministic and are named in the
            warning. The copy feeds every input to each member, carries the
            members in the batch axis (`K * N` examples: every other layer,
            batch normalization included, sees the members as examples;
            each rank-1 layer is wrapped in `kb.layers.MembersInBatch`) and
            returns `(N, K, ...)` outputs (`kb.layers.MembersFromBatch`);
            fit it with labels repeated per member, average the members
            with `kb.layers.MemberAverage`.

    Returns:
        A new, built Keras model: Sequential for a Sequential model,
        Functional otherwise (also for a subclass of Functional).

    Raises:
        ValueError: a bad argument, named as in `Received: arg=value`.

    Example:

    ```python
    bayesian = kb.to_bayesian(trained_cnn, moped_delta=0.1,
                              kl_weight=1 / len(x_train))
    bayesian.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    bayesian.fit(x_train, y_train, epochs=3)

    # Only the classification head:
    head_only = kb.to_bayesian(trained_cnn, layers=["predictions"])

    # A rank-1 ensemble of 4 members; outputs (N, 4, classes):
    ensemble = kb.to_bayesian(trained_cnn, estimator="rank1", ensemble_size=4)
    ensemble.fit(x_train, np.repeat(y_train[:, None], 4, axis=1), ...)
    ```
    """
    if (
        not isinstance(estimator, str)
        or estimator.lower() not in table.CLASS_SUFFIXES
    ):
        raise _validation.invalid(
            "estimator",
            f"Expected one of {sorted(table.CLASS_SUFFIXES)}.",
            estimator,
        )
    estimator = estimator.lower()
    delta = _moped_delta(moped_delta)
    kl_weight = _validation.kl_weight(kl_weight)
    posterior_value = _validation.posterior_value(posterior_value)
    seed = _validation.seed(seed)
    if not isinstance(model, (keras.Sequential, Functional)) or not model.built:
        raise _validation.invalid(
            "model", "Expected a built Sequential or Functional model.", model
        )
    candidates, selected = selection.select(model, layers)

    # Built in mean mode: on PyTorch, Keras runs a layer inside a subclassed
    # block on real (zero) tensors to infer shapes, and a Flipout layer in
    # sample mode doubles that; the requested mode is set once converted.
    arguments = {"kl_weight": kl_weight, "posterior_value": "mean"}
    members = ensemble.ensemble_size(ensemble_size, estimator, prior)
    if members is None:
        arguments["kernel_prior"] = prior
    else:
        arguments["batch_shape"] = (members,)

    converter = Converter(selected, estimator, arguments, seed)
    new_model = converter.clone(model)
    converter.check_replacements()
    converter.copy_weights(delta)
    for record in converter.converted:
        record.layer.posterior_value = posterior_value
    converter.copy_trainable_flags(model, new_model)
    report.warn(converter, candidates)
    if members is not None:
        new_model = ensemble.members_model(new_model, members)
    return new_model


def _moped_delta(value):
    try:
        delta = float(value)
    except (TypeError, ValueError):
        delta = float("nan")
    if isinstance(value, bool) or not np.isfinite(delta) or delta <= 0:
        raise _validation.invalid(
            "moped_delta", "Expected a finite, strictly positive number.", value
        )
    return delta


class Converter(graph.GraphWalker):
    """The cloning rule of `to_bayesian`, and what it did.

    Args:
        selected: ids of the original layers to convert.
        estimator: `"flipout"`, `"reparameterization"` or `"rank1"`.
        bayesian_arguments: keyword arguments of every new Bayesian layer
            (prior, `kl_weight`, `posterior_value`; `batch_shape` for
            rank-1 layers, which are wrapped in `MembersInBatch`).
        seed: seed of the first new layer (the next ones count up), or None.
    """

    caller = "to_bayesian"

    def __init__(self, selected, estimator, bayesian_arguments, seed):
        super().__init__()
        self.selected = selected
        self.estimator = estimator
        self.bayesian_arguments = bayesian_arguments
        self.seed = seed
        self.converted = []  # Converted records
        self.unconverted = []  # Unconverted records

    def replace(self, layer):
        if id(layer) not in self.selected:
            return None
        new = self._convert(layer)
        if isinstance(new, Rank1Layer):
            # The copy carries the members in the batch axis.
            return MembersInBatch(new, name=layer.name)
        return new

    def copy(self, layer):
        return self._convert_inside(layer, super().copy(layer))

    def _convert(self, layer, replaced=None):
        """A Bayesian copy of `layer`, or None (the reason recorded)."""
        rule = table.rule_of_keras(layer)
        cls = rule.bayesian_class(self.estimator)
        if type(layer) is not rule.keras_class:
            self._refuse(layer, f"a subclass of keras.layers.{rule.stem}")
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
            **self._placeholders(),
            seed=seed,
            activity_regularizer=layer.activity_regularizer,
            name=layer.name,
            dtype=config.get("dtype"),
            trainable=layer.trainable,
        )
        dropped = [key for key in rule.unsupported if config.get(key)]
        self.converted.append(
            report.Converted(layer, new, rule, dropped, replaced)
        )
        return new

    def _placeholders(self):
        """The kernels' posterior variables are set from the trained kernels
        once the copy is built: zero initialisers skip drawing random
        numbers only to overwrite them (a third of the conversion of
        VGG16's dense layers). The layers get the default family back
        before their weights are set (`_default_posterior`). A rank-1
        layer's factors keep their family's initial values."""
        if self.estimator == "rank1":
            return {}
        return {"kernel_posterior": posteriors.MeanFieldNormal().placeholder()}

    def _refuse(self, layer, reason):
        self.unconverted.append(report.Unconverted(layer, reason))

    # -- layers inside subclassed layers ----------------------------------

    def _convert_inside(self, original, copy):
        """Put Bayesian layers in a subclassed layer's copy, where it can."""
        inner = original._flatten_layers(include_self=False)
        targets = [layer for layer in inner if id(layer) in self.selected]
        if not targets:
            if copy is original or graph.config_rebuilds(original):
                return copy
            # Its config holds keys its class refuses (keras-hub's
            # ViTPatchingAndEmbedding): the wrapper saves a config that
            # loads.
            return blocks.ConvertedBlock(
                copy, [], name=original.name, trainable=original.trainable
            )
        copied = copy._flatten_layers(include_self=False)
        if len(copied) != len(inner) or any(
            type(a) is not type(b) for a, b in zip(inner, copied)
        ):
            # The copy makes its layers differently, or in a `build` that
            # its original's build config could not replay.
            for layer in targets:
                self._refuse(layer, _inside(original, "creates it in build"))
            return copy
        groups = []
        pairs = {id(original): graph.Copy(original, copy, "own")}
        for old, new in zip(inner, copied):
            pairs[id(old)] = graph.Copy(old, new, "own")
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
        """A replaced inner layer must be uncalled, its Bayesian one called
        (`built` would not do: a block made in `build` is built with its
        plain layers before they are replaced)."""
        for record in self.converted:
            if record.replaced is None:
                continue
            if record.replaced._called or not record.layer._called:
                raise ValueError(
                    "to_bayesian cannot convert layer "
                    f"'{record.original.name}': the layer holding it also "
                    "calls it through a reference that cannot be replaced. "
                    "Leave it out with `layers=`."
                )

    def copy_weights(self, moped_delta):
        """Set every copied layer's weights, and the posteriors (MOPED)."""
        self.copy_plain_weights()
        for record in self.converted:
            original, new = record.original, record.layer
            if isinstance(new, Rank1Layer):
                ensemble.set_rank1(original, new)
                continue
            _default_posterior(new)
            weights = {
                name: graph.numpy(getattr(original, attribute))
                for attribute, name in record.rule.kernels
            }
            if getattr(original, "bias", None) is not None:
                weights["bias"] = graph.numpy(original.bias)
            new.set_from_point(weights, moped_delta)

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
        for record in self.copies.values():
            pair(id(record.original), record.copy)
            if record.which == "all":
                # Copied whole: pair the layers it holds, now built.
                inner = record.original._flatten_layers(include_self=False)
                copied = record.copy._flatten_layers(include_self=False)
                if [type(a) for a in inner] == [type(b) for b in copied]:
                    for a, b in zip(inner, copied):
                        pair(id(a), b)
        for record in self.converted:
            pair(id(record.original), record.layer)
        # `_flatten_layers` lists a layer before the layers it holds, so an
        # inner flag set after its holder's (which sets every inner one) wins.
        for layer in model._flatten_layers(include_self=True):
            for copy in pairs.get(id(layer), ()):
                if copy.trainable != layer.trainable:
                    copy.trainable = layer.trainable


def _inside(holder, why):
    return f"held by '{holder.name}' ({type(holder).__name__}), which {why}"


def _default_posterior(layer):
    """Give a converted layer the default kernel posterior (its config and
    declared weights say so); the variables are kept."""
    posterior = posteriors.MeanFieldNormal()
    layer.kernel_posterior = posterior
    for weight in layer.posterior_weights:
        if weight.name != "bias":
            weight.posterior = posterior
