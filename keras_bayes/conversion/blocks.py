"""Subclassed layers whose inner layers `to_bayesian` made Bayesian.

A residual block written as a `keras.layers.Layer` subclass (as keras-hub
writes MobileNet's and EfficientNet's) makes its convolutions in its
constructor and calls them through its attributes. `to_bayesian` copies the
block from its config and puts Bayesian layers at those attributes. The
block's config cannot say so (it rebuilds plain layers), so the block is
wrapped in a `ConvertedBlock`, whose config records which attributes hold
which Bayesian layer: a `.keras` file then loads with the same layers.

A block that makes its layers in `build` (`MultiHeadAttention`, keras-hub's
transformer blocks) is copied built (`graph.copy_layer`); its wrapper saves
the block's build config, and loading builds the block before putting the
Bayesian layers in. A layer whose config holds keys its own class refuses
(`graph.rebuild`) is wrapped with no Bayesian layer, for a config that
loads.

An attribute path is a list of steps from the block: an attribute name, or
an int indexing the list or tuple before it (`["gates", 1]`).
"""

import keras
from keras.src.models.functional import Functional

from keras_bayes._export import register
from keras_bayes.conversion import graph

# Keras' own bookkeeping: `_layers` is kept in step by the tracker.
_BOOKKEEPING = ("_layers", "_tracker")


def _attribute_names(holder):
    names = [name for name in vars(holder) if name not in _BOOKKEEPING]
    # PyTorch keeps sub-modules (Keras layers, on that backend) apart.
    names += list(vars(holder).get("_modules", None) or {})
    return names


def _is_holder(value):
    return isinstance(value, keras.layers.Layer) and not isinstance(
        value, (keras.Sequential, Functional)
    )


def find_paths(root, target):
    """Every attribute path from `root` to `target` (empty if none).

    Only plain layers are searched: a nested model calls its layers
    through its graph, so replacing an attribute would not reach them.
    """
    paths, seen = [], {id(root)}

    def visit(holder, prefix):
        for name in _attribute_names(holder):
            value = getattr(holder, name, None)
            items = (
                list(enumerate(value))
                if isinstance(value, (list, tuple))
                else [(None, value)]
            )
            for index, item in items:
                path = prefix + [name] + ([] if index is None else [index])
                if item is target:
                    paths.append(path)
                elif _is_holder(item) and id(item) not in seen:
                    seen.add(id(item))
                    visit(item, path)

    visit(root, [])
    return paths


def get_path(root, path):
    value = root
    for step in path:
        value = value[step] if isinstance(step, int) else getattr(value, step)
    return value


def set_path(root, path, new):
    """Put `new` at `path`, keeping the holder's list of layers in order."""
    if isinstance(path[-1], int):
        holder, name, index = get_path(root, path[:-2]), path[-2], path[-1]
        sequence = getattr(holder, name)
        old = sequence[index]
        if isinstance(sequence, list):
            sequence[index] = new
        else:
            items = list(sequence)
            items[index] = new
            setattr(holder, name, type(sequence)(items))
    else:
        holder, name = get_path(root, path[:-1]), path[-1]
        old = getattr(holder, name)
    tracker = getattr(holder, "_tracker", None)
    if tracker is not None and tracker.is_in_store("layers", old):
        # In place, so that the holder's weights, saving and
        # `_flatten_layers` list `new` where `old` was.
        tracker.replace_tracked_value("layers", old, new)
    if not isinstance(path[-1], int):
        setattr(holder, name, new)


def _saved_config(layer):
    """`layer` serialised for `from_config`, without its build config (it
    loads unbuilt and builds itself and its layers on its first call), and
    without the config keys its class refuses (`graph.rebuild`)."""
    config = keras.saving.serialize_keras_object(layer)
    build_config = config.pop("build_config", None)
    loadable = graph.rebuild(type(layer), layer.get_config())[1]
    config["config"] = {
        key: value for key, value in config["config"].items() if key in loadable
    }
    return config, build_config


def _has_path(root, path):
    try:
        get_path(root, path)
    except (AttributeError, IndexError, KeyError):
        return False
    return True


@register
class ConvertedBlock(keras.layers.Layer):
    """A subclassed layer holding Bayesian layers that `to_bayesian` put in.

    Calls the block it wraps; its config records the block's config and,
    for each Bayesian layer, its config and the attribute paths that hold
    it, so that a saved model loads with the same layers.

    Args:
        layer: the block, a `keras.layers.Layer` holding Bayesian layers.
        paths: one list of attribute paths per Bayesian layer.
        **kwargs: base layer arguments (`name`, `trainable`, ...).

    Input shape:
        what the wrapped block takes.

    Output shape:
        what the wrapped block gives.

    Example:

    ```python
    bayesian = kb.to_bayesian(keras_hub_backbone)
    block = bayesian.get_layer("block_1_0")  # a ConvertedBlock
    block.layer.conv1  # a kb.layers.Conv2DFlipout
    ```
    """

    def __init__(self, layer, paths, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer
        self.paths = [[list(path) for path in group] for group in paths]

    def build(self, *args, **kwargs):
        # The block builds itself on its first call, with its layers.
        pass

    def call(self, inputs, *args, **kwargs):
        return self.layer(inputs, *args, **kwargs)

    def get_config(self):
        block, build_config = _saved_config(self.layer)
        converted = [
            {
                "paths": group,
                "layer": _saved_config(get_path(self.layer, group[0]))[0],
            }
            for group in self.paths
        ]
        return {
            **super().get_config(),
            "layer": block,
            "block_build_config": build_config,
            "converted": converted,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        block = keras.saving.deserialize_keras_object(config.pop("layer"))
        build_config = config.pop("block_build_config", None)
        converted = config.pop("converted")
        paths = [path for entry in converted for path in entry["paths"]]
        if build_config and not (
            paths and all(_has_path(block, p) for p in paths)
        ):
            # The block makes these layers in `build` (MultiHeadAttention),
            # or holds none of keras-bayes (it is wrapped for its config):
            # built here, not first inside a traced call (on PyTorch, the
            # constants its build makes would be made on the meta device).
            block.build_from_config(build_config)
        groups = []
        for entry in converted:
            bayesian = keras.saving.deserialize_keras_object(entry["layer"])
            for path in entry["paths"]:
                set_path(block, path, bayesian)
            groups.append(entry["paths"])
        return cls(block, groups, **config)
