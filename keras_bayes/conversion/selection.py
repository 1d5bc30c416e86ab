"""The `layers=` argument of `to_bayesian`: which layers to convert."""

import keras
import numpy as np

from keras_bayes import _validation
from keras_bayes.conversion import table

_EXPECTED = (
    "Expected None (every convertible layer), a list of layer names and/or "
    "layer classes, or a callable `layer -> bool`."
)


def candidates(model):
    """Built layers of a convertible kind, nested ones included, in order."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if table.rule_of_keras(layer) is not None and layer.weights
    ]


def select(model, layers):
    """The ids of the candidate layers that `layers` selects.

    Args:
        model: the model to convert.
        layers: the user's `layers` argument.

    Returns:
        `(candidate layers, set of ids of the selected ones)`.

    Raises:
        ValueError: `layers` is not one of the accepted forms, an entry
            matches no layer, names a layer with nothing to convert, or a
            callable returns something other than a bool.
    """
    found = candidates(model)
    if layers is None:
        return found, {id(layer) for layer in found}
    if isinstance(layers, (str, type)):
        layers = [layers]
    if callable(layers) and not isinstance(layers, type):
        return found, _select_by_function(found, layers)
    if not isinstance(layers, (list, tuple, set)):
        raise _validation.invalid("layers", _EXPECTED, layers)
    entries = list(layers)
    if not entries:
        raise _validation.invalid(
            "layers",
            "Expected at least one layer name or class (use None for every "
            "convertible layer).",
            layers,
        )
    everything = model._flatten_layers(include_self=False)
    selected = set()
    for entry in entries:
        selected |= _select_entry(entry, everything, found, layers)
    return found, selected


def _select_entry(entry, everything, found, layers):
    if isinstance(entry, type) and issubclass(entry, keras.layers.Layer):
        if not any(issubclass(entry, cls) for cls in table.RULES):
            raise _validation.invalid(
                "layers",
                f"The class {entry.__name__} is not a convertible kind of "
                f"layer; convertible: {', '.join(table.CLASS_NAMES)}.",
                layers,
            )
        matched = {id(layer) for layer in found if isinstance(layer, entry)}
        if not matched:
            raise _validation.invalid(
                "layers",
                f"The model has no built {entry.__name__} layer.",
                layers,
            )
        return matched
    if isinstance(entry, str):
        named = [layer for layer in everything if layer.name == entry]
        if not named:
            raise _validation.invalid(
                "layers", f"The model has no layer named '{entry}'.", layers
            )
        matched = set()
        for layer in named:
            inside = {id(sub) for sub in layer._flatten_layers()}
            matched |= {id(c) for c in found if id(c) in inside}
        if not matched:
            kinds = sorted({type(layer).__name__ for layer in named})
            raise _validation.invalid(
                "layers",
                f"The layer '{entry}' ({', '.join(kinds)}) neither is nor "
                "contains a convertible layer; convertible: "
                f"{', '.join(table.CLASS_NAMES)}.",
                layers,
            )
        return matched
    raise _validation.invalid(
        "layers",
        f"{_EXPECTED} The entry {entry!r} is neither a name nor a Keras "
        "layer class.",
        layers,
    )


def _select_by_function(found, function):
    selected = set()
    for layer in found:
        answer = function(layer)
        if not isinstance(answer, (bool, np.bool_)):
            raise _validation.invalid(
                "layers",
                "Expected the callable to return True or False; it returned "
                f"{answer!r} for layer '{layer.name}'.",
                function,
            )
        if answer:
            selected.add(id(layer))
    return selected
