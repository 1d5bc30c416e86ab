"""Registering the public classes for Keras serialization."""

import keras

PACKAGE = "keras_bayes"


def register(cls):
    """Register `cls` as `keras_bayes>ClassName` for `.keras` save/load."""
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)


def public_class(name, base, doc, **attributes):
    """A registered subclass `name` of `base`: a public class that only
    fixes class attributes (a rank, an estimator) and a docstring."""
    namespace = {"__doc__": doc, "__module__": base.__module__, **attributes}
    return register(type(name, (base,), namespace))
