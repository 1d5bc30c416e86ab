"""Validate every value before assigning any: a failed load changes nothing.

A `Plan` collects `(variable, value)` pairs and the problems found while
matching a file to a model. `apply` raises one `ValueError` listing every
problem, or assigns everything.
"""

import warnings

import keras
import numpy as np

from keras_bayes import _validation, posteriors
from keras_bayes.workflows import is_bayesian

LOC, SCALE = "loc", "scale"


def posterior_roles(layer):
    """`{(weight name, "loc" or "scale"): PosteriorWeight}` of a Bayesian
    layer: every posterior weight's location, and a stochastic one's
    standard deviation. A source library's variables map to these roles;
    the posterior family stores them in its own parameterisation."""
    roles = {}
    for weight in layer.posterior_weights:
        roles[(weight.name, LOC)] = weight
        if weight.posterior.stochastic:
            roles[(weight.name, SCALE)] = weight
    return roles


def posterior_names(layer):
    """The names of a Bayesian layer's posterior variables, sorted."""
    return sorted(
        variable.name
        for weight in layer.posterior_weights
        for variable in weight.variables.values()
    )


def weight_layers(model):
    """The layers of `model` that hold weights, in the model's order.

    A keras-bayes layer counts as one (its control variables `kl_weight` and
    `posterior_sample` are not loaded); any other layer counts when it holds
    weights itself.
    """
    if not isinstance(model, keras.Model):
        raise _validation.invalid("model", "Expected a Keras model.", model)
    if not model.built:
        raise _validation.invalid(
            "model",
            "Expected a built model: give it a `keras.Input` or call it on "
            "a batch first, so that its weights exist.",
            model,
        )
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.Model):
            continue
        if is_bayesian(layer):
            found.append(layer)
        elif layer.weights and not any(
            sub.weights for sub in layer._flatten_layers(include_self=False)
        ):
            found.append(layer)
    return found


def describe(layers):
    return ", ".join(f"'{layer.name}'" for layer in layers)


class Plan:
    """Values to assign, and the problems that forbid assigning any."""

    def __init__(self, function, source):
        self.function = function
        self.source = source
        self.assignments = []
        self.problems = []
        self.floored = []

    def problem(self, text):
        self.problems.append(text)

    def add(self, layer, variable, value, what):
        """Plan `variable <- value`; a shape mismatch is a problem."""
        value = np.asarray(value)
        expected = tuple(variable.shape)
        if value.shape != expected:
            self.problem(
                f"layer '{layer.name}': {what} gives shape {value.shape} in "
                f"Keras' layout, the model's `{variable.name}` has shape "
                f"{expected}"
            )
            return
        dtype = keras.backend.standardize_dtype(variable.dtype)
        self.assignments.append((variable, value.astype(dtype)))

    def add_posterior(self, layer, weight, loc, scale, what):
        """Plan the posterior weight `weight` <- mean `loc` and standard
        deviations `scale` (None for a point estimate), stored by its
        family. Scales under keras-bayes' 1e-5 floor are raised to it (and
        named in a warning once everything is assigned).

        Args:
            layer: the Bayesian layer.
            weight: its `PosteriorWeight`.
            loc, scale: arrays in Keras' layout.
            what: `{"loc": ..., "scale": ...}`, the source of each, for
                the messages.
        """
        arrays = {LOC: np.asarray(loc)}
        if scale is not None:
            arrays[SCALE] = np.asarray(scale, dtype="float64")
        wrong = False
        for role, value in arrays.items():
            if value.shape != weight.shape:
                names = [
                    variable.name
                    for suffix, variable in weight.variables.items()
                    if (suffix == LOC) == (role == LOC)
                ]
                self.problem(
                    f"layer '{layer.name}': {what[role]} gives shape "
                    f"{value.shape} in Keras' layout, the model's "
                    f"`{'`, `'.join(names)}` has shape {weight.shape}"
                )
                wrong = True
        if wrong:
            return
        if scale is not None:
            below = int(np.sum(arrays[SCALE] < posteriors.SCALE_FLOOR))
            if below:
                self.floored.append(
                    f"{what[SCALE]} ({below} of {arrays[SCALE].size})"
                )
        try:
            values = weight.posterior.values(arrays[LOC], arrays.get(SCALE))
        except ValueError as error:
            self.problem(
                f"layer '{layer.name}', weight '{weight.name}': {error}"
            )
            return
        for suffix, value in values.items():
            variable = weight.variables[suffix]
            dtype = keras.backend.standardize_dtype(variable.dtype)
            self.assignments.append((variable, value.astype(dtype)))

    def check_count(self, model_layers, saved_names, kind):
        if len(model_layers) == len(saved_names):
            return True
        self.problem(
            f"the file has {len(saved_names)} {kind} with weights "
            f"({', '.join(repr(n) for n in saved_names)}), the model has "
            f"{len(model_layers)} ({describe(model_layers)})"
        )
        return False

    def apply(self):
        if self.problems:
            listing = "\n".join(f"- {problem}" for problem in self.problems)
            raise ValueError(
                f"{self.function}: cannot load {self.source!r} onto the "
                f"model; nothing was assigned.\n{listing}"
            )
        for variable, value in self.assignments:
            variable.assign(value)
        if self.floored:
            warnings.warn(
                f"{self.function}: posterior scales below keras-bayes' "
                f"floor of 1e-5 were raised to it: {', '.join(self.floored)}.",
                stacklevel=3,
            )
