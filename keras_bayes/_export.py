"""One decorator that registers a public class for Keras serialization."""

import keras

PACKAGE = "keras_bayes"


def register(cls):
    """Register `cls` as `keras_bayes>ClassName` for `.keras` save/load."""
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)
