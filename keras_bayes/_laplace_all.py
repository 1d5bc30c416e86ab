"""`kb.laplace.fit(..., subset="all", hessian="diag")`: the exact GGN
diagonal of every kernel and bias, from per-example Jacobians.

For example `n` with logits `f_n` (C of them) and Jacobian `J_n` (C rows,
one column per weight), the GGN diagonal is
`sum_n sum_{c,e} J_nc Lambda_n,ce J_ne`, with `Lambda_n = diag(p_n) -
p_n p_n^T` (classification) or `I / sigma^2` (regression): per weight,
`sum_n [sum_c p_nc J_nc^2 - (sum_c p_nc J_nc)^2]`. It is exact: no label
sampling, no Kronecker factoring.

The per-example Jacobians need each backend's own autodiff, imported here
inside one function per backend:

- JAX: `jax.jit(jax.vmap(jax.jacrev(...)))` over the model's
  `stateless_call`: C backward passes per example, vectorised over the
  batch.
- PyTorch: `torch.func.vmap(torch.func.jacrev(...))` over the same
  `stateless_call`; where `vmap` cannot batch a layer (Keras convolutions
  on PyTorch use a channels-last memory format that `vmap` rejects), the
  Jacobian of the batch's logits by `torch.func.jacrev`, which costs as
  on TensorFlow (below).
- TensorFlow: `tf.GradientTape.jacobian(..., experimental_use_pfor=True)`
  of the batch's logits: `pfor` vectorises the `batch * C` backward
  passes, each through the whole batch, so a batch costs about
  `batch_size` times the JAX or PyTorch work (keep `batch_size` small).

Memory: a batch holds `batch_size * C * P` Jacobian entries (P weights).
"""

import keras
import numpy as np
from keras import ops, tree

from keras_bayes import laplace
from keras_bayes._laplace_ops import compile_step
from keras_bayes._laplace_ops import to_float64 as _numpy


def _selected(model):
    """`[(layer, [variables])]`: the kernels and biases of the layers
    `kb.to_bayesian` converts, in the model's order."""
    groups = []
    for layer in model._flatten_layers(include_self=False):
        if type(layer) not in laplace._CONVERTIBLE:
            continue
        variables = [
            v
            for v in layer.weights
            if v.path.split("/")[-1] in laplace._WEIGHT_NAMES
        ]
        if variables:
            groups.append((layer, variables))
    return groups


class AllLayers:
    """The diagonal GGN of every kernel and bias (see the module)."""

    def __init__(self, head, likelihood):
        self.head = head
        self.likelihood = likelihood
        self.groups = _selected(head.model)
        self.num_groups = len(self.groups)
        self.variables = [v for _, vs in self.groups for v in vs]
        self.theta = [
            ops.convert_to_numpy(v).astype("float64") for v in self.variables
        ]
        self.num_parameters = sum(t.size for t in self.theta)
        self._logits = _logits_function(head, self.variables)
        self._jacobians = _jacobian_function(self._logits)

    def _values(self, arrays=None):
        if arrays is None:
            return [ops.convert_to_tensor(v) for v in self.variables]
        return [
            ops.convert_to_tensor(a, dtype=v.dtype)
            for a, v in zip(arrays, self.variables)
        ]

    def _batch_terms(self, values, x, y):
        """Per batch: the log-likelihood (classification) or the sum of
        squared residuals (regression), and each variable's GGN diagonal
        terms (before the division by the noise variance)."""
        logits = self._logits(values, x)
        jacobians = self._jacobians(values, x)
        if self.likelihood == "regression":
            total = ops.sum(ops.square(ops.cast(y, logits.dtype) - logits))
            return total, [
                ops.sum(ops.square(jac), axis=(0, 1)) for jac in jacobians
            ]
        log_p = ops.log_softmax(logits, axis=-1)
        labels = ops.expand_dims(ops.cast(y, "int32"), -1)
        total = ops.sum(ops.take_along_axis(log_p, labels, axis=-1))
        p = ops.exp(log_p)
        terms = []
        for jac in jacobians:
            weights = p
            for _ in range(len(jac.shape) - 2):
                weights = ops.expand_dims(weights, -1)
            first = ops.sum(weights * ops.square(jac), axis=(0, 1))
            second = ops.sum(ops.square(ops.sum(weights * jac, axis=1)), 0)
            terms.append(first - second)
        return total, terms

    def accumulate(self, x, y, n, batch_size):
        values = self._values()
        terms = compile_step(self._batch_terms)
        sums = [np.zeros(t.shape) for t in self.theta]
        total = 0.0
        for start, stop, xb in laplace._batches(x, n, batch_size):
            xb = tree.map_structure(ops.convert_to_tensor, xb)
            batch_total, batch_terms = terms(
                values, xb, ops.convert_to_tensor(y[start:stop])
            )
            total += float(_numpy(batch_total))
            for i, term in enumerate(batch_terms):
                sums[i] += _numpy(term)
        self.num_examples = n
        if self.likelihood == "regression":
            outputs = self.head.outputs
            noise = total / (n * outputs)
            if not noise > 0:
                raise laplace._validation.invalid(
                    "y",
                    "The model fits the targets exactly: the noise variance "
                    "cannot be estimated.",
                    laplace._validation.summary(y),
                )
            self.noise_variance = noise
            self.log_likelihood = (
                -0.5 * n * outputs * (np.log(2 * np.pi * noise) + 1)
            )
            sums = [s / noise for s in sums]
        else:
            self.noise_variance = None
            self.log_likelihood = total
        self.diagonal = [np.maximum(s, 0) for s in sums]
        self.ggn = {v.path: d for v, d in zip(self.variables, self.diagonal)}

    def _group_slices(self):
        start = 0
        for _, variables in self.groups:
            yield slice(start, start + len(variables))
            start += len(variables)

    def eigenvalues(self):
        result = []
        for part in self._group_slices():
            eig = np.concatenate([d.ravel() for d in self.diagonal[part]])
            norm = float(sum(np.sum(t**2) for t in self.theta[part]))
            result.append((eig, norm))
        return result

    def set_precision(self, precision):
        deltas = np.broadcast_to(
            np.asarray(precision, "float64"), (self.num_groups,)
        )
        self.variance = [None] * len(self.variables)
        for delta, part in zip(deltas, self._group_slices()):
            for i in range(part.start, part.stop):
                self.variance[i] = 1.0 / (self.diagonal[i] + delta)

    def posterior_variances(self):
        result = {}
        index = 0
        for layer, variables in self.groups:
            entry = {}
            for v in variables:
                entry[v.path] = (self.theta[index], self.variance[index])
                index += 1
            result[layer.name] = entry
        return result

    def _moments(self, values, x, variances, full_covariance):
        mean = self._logits(values, x)
        cov = 0.0
        for jac, variance in zip(self._jacobians(values, x), variances):
            size = int(np.prod(jac.shape[2:]))
            flat = ops.reshape(jac, (-1, jac.shape[1], size))
            scale = ops.reshape(variance, (-1,))
            if full_covariance:
                cov = cov + ops.einsum("ncp,nep->nce", flat * scale, flat)
            else:
                cov = cov + ops.sum(ops.square(flat) * scale, axis=-1)
        return mean, cov

    def logits_moments(self, x, dtype, full_covariance):
        if getattr(self, "_compiled", (None,))[0] is not full_covariance:
            function = compile_step(
                lambda v, x, s: self._moments(v, x, s, full_covariance)
            )
            self._compiled = (full_covariance, function)
        x = tree.map_structure(ops.convert_to_tensor, x)
        return self._compiled[1](self._values(), x, self._values(self.variance))

    def weight_samples(self, num_samples, rng):
        return [
            [
                t + np.sqrt(v) * rng.standard_normal(t.shape)
                for t, v in zip(self.theta, self.variance)
            ]
            for _ in range(num_samples)
        ]

    def sample_outputs(self, x, dtype, samples):
        x = tree.map_structure(ops.convert_to_tensor, x)
        return ops.stack([self._logits(self._values(s), x) for s in samples])


def _logits_function(head, variables):
    """`logits(values, x)`: the model's logits with `variables` replaced
    by `values`, through `stateless_call` (training=False)."""
    features = head.features
    trainable = features.trainable_variables
    frozen = features.non_trainable_variables
    index = {id(v): i for i, v in enumerate(variables)}
    kernel = index[id(head.layer.kernel)]
    bias = index[id(head.layer.bias)] if head.use_bias else None

    def logits(values, x):
        train = [
            values[index[id(v)]] if id(v) in index else v.value
            for v in trainable
        ]
        fixed = [
            values[index[id(v)]] if id(v) in index else v.value for v in frozen
        ]
        phi, _ = features.stateless_call(train, fixed, x, training=False)
        out = ops.matmul(phi, values[kernel])
        if bias is not None:
            out = out + values[bias]
        return out

    return logits


def _jacobian_function(logits):
    """`jacobians(values, x)`: per variable, `(n, C, *shape)`."""
    backend = keras.backend.backend()
    if backend == "jax":
        return _jax_jacobians(logits)
    if backend == "torch":
        return _torch_jacobians(logits)
    if backend == "tensorflow":
        return _tensorflow_jacobians(logits)
    raise ValueError(
        f'subset="all" needs per-example Jacobians, which keras-bayes '
        f"computes on JAX, PyTorch and TensorFlow, not on '{backend}'."
    )


def _one(x):
    return tree.map_structure(lambda a: a[None], x)


def _jax_jacobians(logits):
    import jax

    def single(values, x):
        return logits(values, _one(x))[0]

    return jax.vmap(jax.jacrev(single), in_axes=(None, 0))


def _torch_jacobians(logits):
    import torch.func

    def single(values, x):
        return logits(values, _one(x))[0]

    per_example = torch.func.vmap(torch.func.jacrev(single), in_dims=(None, 0))
    state = {"vmap": True}

    def call(values, x):
        if state["vmap"]:
            try:
                return per_example(values, x)
            except RuntimeError:
                # `vmap` cannot batch every layer (Keras convolutions on
                # PyTorch use a channels-last memory format it rejects):
                # then the Jacobian of the batch's logits, as on
                # TensorFlow.
                state["vmap"] = False
        return torch.func.jacrev(lambda v: logits(v, x))(values)

    return call


def _tensorflow_jacobians(logits):
    import tensorflow as tf

    def jacobians(values, x):
        with tf.GradientTape() as tape:
            tape.watch(values)
            out = logits(values, x)
        return tape.jacobian(out, values, experimental_use_pfor=True)

    def call(values, x):
        # Examples do not interact (training=False), so the Jacobian of the
        # batch's logits in the shared weights, `(n, C, *shape)`, holds each
        # example's own Jacobian.
        return jacobians(list(values), x)

    return call
