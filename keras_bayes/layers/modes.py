"""The sample/mean switch of the Bayesian layers.

`branch` is the one place that picks sample or mean mode for a call:

- eager execution (PyTorch always; TensorFlow and JAX outside a traced
  function): the flag's value is read and only the chosen side runs;
- TensorFlow, traced: `ops.cond`, which runs only the chosen side (a
  compiled `predict` in mean mode draws nothing and runs one map);
- JAX, traced: the same `lax.cond` for the value, under a custom
  derivative. XLA's CPU backend runs the derivative of a convolution
  inside `lax.cond` 15 to 80 times slower than outside it, and any
  gradient (a training step, `jax.grad` of a custom loop called without
  `training=True`, per-example gradients, input attributions) would
  differentiate the branch. So the derivative comes from the branch-free
  form of the same computation: sample mode with every posterior scale
  multiplied by the flag (0 in mean mode: the outputs are the mean's, the
  noise is drawn and multiplied by 0). A function that is never
  differentiated (`predict`) keeps the branch and draws nothing in mean
  mode; differentiated ones run one branch-free pass.

Also here: the cached KL of eager mean mode.
"""

import keras
from keras import ops


def known_bool(flag):
    """`bool(flag)` when its value is known now (eager execution), None
    inside a traced function (`tf.function`, `jax.jit`)."""
    if keras.backend.backend() == "torch":
        # Always eager: read the value directly, the cheapest way.
        return float(flag.value) > 0.5
    try:
        return bool(ops.convert_to_numpy(flag) > 0.5)
    except (TypeError, RuntimeError):
        # A symbolic TensorFlow tensor (its conversion raises a subclass of
        # RuntimeError) or a JAX tracer (TracerArrayConversionError, a
        # TypeError).
        return None


def branch(flag, sampled, at_mean, scaled, variables, inputs, seed):
    """`sampled(inputs, seed)` or `at_mean(inputs)`, by the flag.

    Each returns `(outputs, kl)`. `scaled(inputs, seed, flag)` is the
    branch-free form (JAX's derivative): sample mode with the scales
    times `flag`, the KL of the mode the flag picks.

    Args:
        flag: the layer's `posterior_sample` variable (1: sample).
        variables: a function returning every variable the functions read
            (the layer's), so that JAX differentiates them as explicit
            inputs; called only there (not on eager calls' hot path).
        inputs, seed: the call's inputs and (JAX) its one seed.

    Returns:
        `(outputs, kl)`, or None when the flag's value is known now and
        says mean mode (the caller's eager mean path).
    """
    known = known_bool(flag)
    if known is not None:
        if known:
            return sampled(inputs, seed)
        return None
    if keras.backend.backend() != "jax":
        return ops.cond(
            flag > 0.5, lambda: sampled(inputs, seed), lambda: at_mean(inputs)
        )
    return _jax_branch(flag, sampled, at_mean, scaled, variables, inputs, seed)


def _jax_branch(flag, sampled, at_mean, scaled, variables, inputs, seed):
    import jax

    variables = variables()

    def bound(function):
        # Runs `function` with the variables set to explicit values, so
        # that a derivative with respect to them is a derivative with
        # respect to this function's inputs.
        def run(values, inputs, seed, *extra):
            mapping = list(zip(variables, values))
            with keras.StatelessScope(state_mapping=mapping):
                return function(inputs, seed, *extra)

        return run

    run_sampled = bound(sampled)
    run_mean = bound(lambda inputs, seed: at_mean(inputs))
    run_scaled = bound(scaled)

    @jax.custom_jvp
    def switch(values, inputs, seed, flag):
        return jax.lax.cond(
            flag > 0.5, run_sampled, run_mean, values, inputs, seed
        )

    @switch.defjvp
    def switch_jvp(primals, tangents):
        values, inputs, seed, flag = primals
        d_values, d_inputs, _, _ = tangents
        return jax.jvp(
            lambda v, x: run_scaled(v, x, seed, flag),
            (values, inputs),
            (d_values, d_inputs),
        )

    values = [variable.value for variable in variables]
    return switch(values, inputs, seed, ops.convert_to_tensor(flag))


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
