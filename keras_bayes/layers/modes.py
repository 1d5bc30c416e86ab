"""The sample/mean switch of the Bayesian layers: reading the flag, the
mean mode of a JAX training step, and the cached KL of eager mean mode."""

import keras
from keras import ops


def known_bool(flag):
    """`bool(flag)` when its value is known now (eager execution), None
    inside a traced function (`tf.function`, `jax.jit`)."""
    try:
        return bool(ops.convert_to_numpy(flag) > 0.5)
    except (TypeError, RuntimeError):
        # A symbolic TensorFlow tensor (its conversion raises a subclass of
        # RuntimeError) or a JAX tracer (TracerArrayConversionError, a
        # TypeError).
        return None


def scaled_by(params, flag):
    """`params` with every scale times `flag` (0: the posterior mean)."""
    return {
        name: p if p.scale is None else p._replace(scale=p.scale * flag)
        for name, p in params.items()
    }


class KLCache:
    """The last eager mean-mode KL and the state of the variables it came
    from (a plain object: Keras does not track it)."""

    key = None
    kl = None
    values = None


def unchanged_key(variables):
    """`(key, values)`: a key that changes whenever one of `variables`
    changes, where eager execution can tell, and the values to keep alive
    with it; `(None, None)` where it cannot (nothing is cached).

    JAX arrays are immutable, so an assignment makes a new array (the key
    keeps the old ones alive, so their ids stay unique). PyTorch counts
    in-place updates in a tensor's version. A KL that a gradient may flow
    through (PyTorch recording gradients of a trainable variable) is never
    taken from the cache.
    """
    values = [variable.value for variable in variables]
    backend = keras.backend.backend()
    if backend == "jax":
        return tuple(id(value) for value in values), values
    if backend == "torch":
        # A computed (not a view) one-element tensor requires a gradient
        # exactly when PyTorch records one for the layer's variables.
        probe = ops.reshape(values[0], (-1,))[:1] * 1.0
        if getattr(probe, "requires_grad", False):
            return None, None
        key = tuple((id(value), value._version) for value in values)
        return key, values
    return None, None
