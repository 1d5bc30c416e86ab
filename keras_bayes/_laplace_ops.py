"""Array helpers that every `kb.laplace` module shares.

`compile_step` is one of the two places keras-bayes imports a backend
(the other is `_laplace_all`'s per-example Jacobians): a batch's curvature
sums are compiled with `jax.jit` or `tf.function` where the backend
compiles, and run as they are on PyTorch. The layers import no backend.
"""

import keras
from keras import ops


def matmul(a, b):
    """`a @ b` for a 2-D `b`, keeping float64 (`keras.ops.matmul` on
    PyTorch returns float32 for float64 inputs)."""
    return ops.einsum("...ij,jk->...ik", a, b)


def compile_step(function):
    """`function` compiled where the backend compiles (`jax.jit`,
    `tf.function`); as is on PyTorch."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(function)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, reduce_retracing=True)
    return function


def to_float64(tensor):
    """A tensor as a float64 NumPy array."""
    return ops.convert_to_numpy(tensor).astype("float64")
