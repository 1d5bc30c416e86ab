"""Name registries of the serializable configuration objects.

Posteriors and priors resolve the same way: an object of the family is
returned as it is, a dict is a Keras-serialized config, and a string is one
of the family's names. Anything else is a `ValueError` that lists the
names.
"""

import keras


class ConfigObject:
    """A plain configuration object: `get_config` / `from_config` and a
    repr that shows the config."""

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Registry:
    """The names of one family of objects (posteriors, priors, ...).

    Args:
        kind: the family's name in error messages, e.g. `"posterior"`.
        module: the public module, e.g. `"keras_bayes.posteriors"`.
        base: the family's base class.
        classes: `{name: class}`; a name resolves to `class()`.
        allow_none: whether None is a valid identifier (kept as None).
    """

    def __init__(self, kind, module, base, classes, allow_none=False):
        self.kind = kind
        self.module = module
        self.base = base
        self.classes = dict(classes)
        self.allow_none = allow_none

    def names(self):
        return sorted(self.classes)

    def get(self, identifier):
        """Resolve an object, a name, a serialized config (or None).

        A config that rebuilds an object of another family (a prior's
        config given for a posterior) is refused like an unknown name.
        """
        if isinstance(identifier, self.base):
            return identifier
        if identifier is None and self.allow_none:
            return None
        if isinstance(identifier, dict):
            rebuilt = keras.saving.deserialize_keras_object(identifier)
            if isinstance(rebuilt, self.base):
                return rebuilt
        if isinstance(identifier, str):
            key = identifier.lower()
            if key in self.classes:
                return self.classes[key]()
        accepted = "object, None," if self.allow_none else "object"
        raise ValueError(
            f"Unknown {self.kind}: {identifier!r}. Expected a "
            f"`{self.module}` {accepted} or one of the names {self.names()}."
        )


def serialize(obj):
    """A Keras-serialized config of `obj` (None stays None)."""
    return keras.saving.serialize_keras_object(obj)


def deserialize(config):
    return keras.saving.deserialize_keras_object(config)
