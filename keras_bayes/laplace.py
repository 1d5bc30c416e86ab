"""`kb.laplace`: the Laplace approximation around a trained Keras model.

The trained weights are the MAP estimate `theta`; the posterior is the
Gaussian `N(theta, (H + P0)^-1)`, where `H` is the generalized Gauss-Newton
(GGN) matrix of the negative log-likelihood at `theta` and `P0 = delta I`
the precision of an isotropic Gaussian prior `N(0, 1 / delta)`. Nothing
about the model changes: it is only read.

Two subsets of weights:

- `subset="last_layer"` (the default): the kernel and bias of the model's
  last `Dense` layer. Its inputs `phi` (the features) are computed once per
  batch with a sub-model, and the curvature is then closed form in
  `keras.ops` (no autodiff): `"kron"` (Kronecker factors), `"full"` (the
  exact GGN) or `"diag"` (its diagonal). Each batch's sums are one
  function, compiled with `jax.jit` or `tf.function` where the backend
  compiles (imported inside `_laplace_ops.compile_step`), run as is on
  PyTorch.
- `subset="all"` with `hessian="diag"`: the exact GGN diagonal of every
  kernel and bias of the layers `kb.to_bayesian` converts, from per-example
  Jacobians of the logits. Those come from each backend's own autodiff
  (`jax.vmap(jax.jacrev)`, `torch.func.vmap(torch.func.jacrev)`, TensorFlow
  `GradientTape.jacobian` with `pfor`), each imported inside a function.

The per-example work (features, logits, curvature sums, predictive
variances) runs in `keras.ops` on the backend; the small algebra on the
curvature (eigendecompositions, the marginal likelihood for any prior
precision, posterior factors) runs in NumPy float64.
"""

import numbers
import warnings
import weakref

import keras
import numpy as np
from keras import ops, tree

from keras_bayes import _validation

LIKELIHOODS = ("classification", "regression")
SUBSETS = ("last_layer", "all")
HESSIANS = ("kron", "full", "diag")
PRIOR_STRUCTURES = ("scalar", "layerwise")
LINKS = ("probit", "mc")
# `hessian="full"` stores a (P, P) float64 matrix: 5000 parameters take
# 200 MB, and its eigendecomposition a few seconds.
MAX_FULL_PARAMETERS = 5000
# `prior_precision="gridsearch"`: 10^-4 to 10^4, four points per decade.
GRID = tuple(float(v) for v in np.logspace(-4, 4, 33))
# Samples of `link="mc"` when `num_samples` is not given.
DEFAULT_LINK_SAMPLES = 100
# Layers whose kernels and biases `subset="all"` covers: those
# `kb.to_bayesian` converts.
_CONVERTIBLE = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)
_WEIGHT_NAMES = ("kernel", "bias", "depthwise_kernel", "pointwise_kernel")


def _choice(value, name, options):
    if not isinstance(value, str) or value.lower() not in options:
        listed = ", ".join(f'"{o}"' for o in options)
        raise _validation.invalid(name, f"Expected one of {listed}.", value)
    return value.lower()


def _compute_dtype():
    """float64 where the backend computes in it (JAX only with x64)."""
    with warnings.catch_warnings():
        # JAX warns that it truncates the request to float32.
        warnings.simplefilter("ignore")
        probe = ops.convert_to_tensor(np.zeros(1), dtype="float64")
    return keras.backend.standardize_dtype(probe.dtype)


def _num_examples(x):
    sizes = {int(np.shape(a)[0]) for a in tree.flatten(x)}
    if len(sizes) != 1:
        raise _validation.invalid(
            "x",
            "Expected arrays (or a list or dict of arrays) with the same "
            "number of examples.",
            _validation.summary(sizes),
        )
    return sizes.pop()


def _batches(x, n, batch_size):
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        part = slice(start, stop)
        yield start, stop, tree.map_structure(lambda a, s=part: a[s], x)


# The features sub-model of each model seen, so that a later fit on the
# same model (a grid search, a benchmark) reuses its compiled predict step.
_FEATURES = weakref.WeakKeyDictionary()


def _features_model(model, last):
    """`keras.Model(model.inputs, last.input)`, made once per model."""
    cached = _FEATURES.get(model)
    if cached is None or cached[0] is not last:
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        cached = (last, keras.Model(inputs, last.input))
        _FEATURES[model] = cached
    return cached[1]


class _Head:
    """The model's last `Dense` layer and the sub-model giving its inputs."""

    def __init__(self, model, likelihood, subset):
        if not isinstance(model, keras.Model) or not model.built:
            raise _validation.invalid(
                "model", "Expected a built Keras model.", model
            )
        last = model.layers[-1] if model.layers else None
        outputs = getattr(model, "outputs", None) or []
        history = (
            getattr(outputs[0], "_keras_history", None) if outputs else None
        )
        if (
            not isinstance(last, keras.layers.Dense)
            or len(outputs) != 1
            or history is None
            or history[0] is not last
        ):
            kind = type(last).__name__ if last is not None else "nothing"
            raise _validation.invalid(
                "subset",
                "The Laplace approximation needs a model whose single output "
                "is a `keras.layers.Dense` layer (softmax or linear "
                f"activation); the last layer of '{model.name}' is {kind}.",
                subset,
            )
        if len(last.input.shape) != 2:
            raise _validation.invalid(
                "model",
                f"The last layer '{last.name}' must take one feature vector "
                f"per example (inputs of rank 2); it takes inputs of shape "
                f"{tuple(last.input.shape)}.",
                model.name,
            )
        if last.activation is keras.activations.softmax:
            applies_softmax = True
        elif last.activation is keras.activations.linear:
            applies_softmax = False
        else:
            raise _validation.invalid(
                "model",
                f"The last layer '{last.name}' must have a softmax or linear "
                "activation.",
                model.name,
            )
        if likelihood == "regression" and applies_softmax:
            raise _validation.invalid(
                "likelihood",
                f"The last layer '{last.name}' applies a softmax: expected "
                '"classification".',
                likelihood,
            )
        self.model = model
        self.layer = last
        self.features = _features_model(model, last)
        self.use_bias = bool(last.use_bias)
        self.outputs = int(last.units)

    def weights(self):
        """The kernel with the bias as its last row, `(D', C)` float64."""
        kernel = ops.convert_to_numpy(self.layer.kernel).astype("float64")
        if self.use_bias:
            bias = ops.convert_to_numpy(self.layer.bias).astype("float64")
            kernel = np.concatenate([kernel, bias[None]], axis=0)
        return kernel

    def phi(self, x, dtype):
        """Features of a batch, with a column of ones for the bias."""
        phi = self.features.predict_on_batch(x)
        phi = ops.convert_to_tensor(np.asarray(phi), dtype=dtype)
        phi = ops.reshape(phi, (ops.shape(phi)[0], -1))
        if self.use_bias:
            ones = ops.ones((ops.shape(phi)[0], 1), dtype=dtype)
            phi = ops.concatenate([phi, ones], axis=1)
        return phi


def _labels(y, n, classes):
    array = np.asarray(y)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    expected = (
        f"Expected {n} integer class labels in [0, {classes - 1}], of shape "
        f"({n},) or ({n}, 1)."
    )
    if array.shape != (n,):
        raise _validation.invalid("y", expected, _validation.summary(y))
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise _validation.invalid("y", expected, _validation.summary(y))
    elif array.dtype.kind not in "iu":
        raise _validation.invalid("y", expected, _validation.summary(y))
    if n and (array.min() < 0 or array.max() >= classes):
        raise _validation.invalid("y", expected, _validation.summary(y))
    return array.astype("int64")


def _targets(y, n, outputs):
    array = np.asarray(y, dtype="float64")
    if array.ndim == 1 and outputs == 1:
        array = array[:, None]
    if array.shape != (n, outputs) or not np.all(np.isfinite(array)):
        raise _validation.invalid(
            "y",
            f"Expected finite regression targets of shape ({n}, {outputs})"
            + (f" or ({n},)" if outputs == 1 else "")
            + ".",
            _validation.summary(y),
        )
    return array


def _prior_precision(value):
    if isinstance(value, str):
        return _choice(value, "prior_precision", ("marglik", "gridsearch"))
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return _validation.number(value, "prior_precision", 0, strict=True)
    array = None
    try:
        array = np.asarray(value, dtype="float64")
    except (TypeError, ValueError):
        pass
    if (
        array is None
        or array.ndim != 1
        or array.size == 0
        or not np.all(np.isfinite(array))
        or np.any(array <= 0)
    ):
        raise _validation.invalid(
            "prior_precision",
            'Expected "marglik", "gridsearch", a finite, strictly positive '
            "number, or one such number per layer.",
            _validation.summary(value) if array is not None else value,
        )
    return array


def fit(
    model,
    x,
    y,
    likelihood="classification",
    subset="last_layer",
    hessian="kron",
    prior_precision="marglik",
    prior_structure="scalar",
    validation_data=None,
    batch_size=256,
):
    """The Laplace approximation of a trained Keras model's posterior.

    The model's weights are the MAP estimate and never change. The
    curvature is the generalized Gauss-Newton matrix (GGN) of the
    negative log-likelihood at those weights:

    - classification: the model ends in a `Dense` layer with a softmax
      activation (its pre-activation is the logits `f`) or a linear one
      (its output is the logits); `y` holds integer labels. The GGN is
      `sum_n J_n^T (diag(p_n) - p_n p_n^T) J_n`, `p_n = softmax(f_n)`.
    - regression: the model ends in a linear `Dense` layer; the Gaussian
      noise variance `sigma^2` is fitted at the MAP by maximum likelihood
      (the mean squared residual over every example and output), and the
      GGN is `sigma^-2 sum_n J_n^T J_n`.

    Args:
        model: a built Keras model whose single output is a `Dense` layer.
        x: training inputs: an array, or a list or dict of arrays.
        y: integer labels `(N,)` or `(N, 1)` (classification), or targets
            `(N, outputs)` (regression; `(N,)` for one output).
        likelihood: `"classification"` (default) or `"regression"`.
        subset: `"last_layer"` (default): the kernel and bias of the last
            `Dense` layer; `"all"`: every kernel and bias of every `Dense`,
            convolution, transposed convolution, depthwise and separable
            convolution layer (needs `hessian="diag"`).
        hessian: `"kron"` (default; last layer only): Kronecker factors
            `A = sum_n phi_n phi_n^T` and `G = sum_n Lambda_n`, with
            `H ~ A (x) G / N`; `"full"`: the exact GGN (last layer only, at
            most 5000 parameters); `"diag"`: the exact GGN diagonal.
        prior_precision: `"marglik"` (default): the precision maximising
            the Laplace log marginal likelihood; `"gridsearch"`: the one of
            `kb.laplace.GRID` (10^-4 to 10^4) with the lowest negative
            log-likelihood of the predictive on `validation_data`; or a
            positive number (or one per layer with `subset="all"`), used
            as is.
        prior_structure: `"scalar"` (default): one precision for every
            weight; `"layerwise"`: one per layer, each maximising the
            marginal likelihood (with `prior_precision="marglik"`).
        validation_data: `(x_val, y_val)`, for `"gridsearch"`.
        batch_size: examples per batch. Defaults to 256.

    Returns:
        A `Laplace` object.

    Example:

    ```python
    la = kb.laplace.fit(trained_model, x_train, y_train)
    probs = la.predict(x_test)  # GLM predictive, probit link
    ```
    """
    likelihood = _choice(likelihood, "likelihood", LIKELIHOODS)
    subset = _choice(subset, "subset", SUBSETS)
    hessian = _choice(hessian, "hessian", HESSIANS)
    prior_structure = _choice(
        prior_structure, "prior_structure", PRIOR_STRUCTURES
    )
    prior = _prior_precision(prior_precision)
    batch_size = _validation.positive_int(batch_size, "batch_size")
    if subset == "all" and hessian != "diag":
        raise _validation.invalid(
            "hessian",
            'subset="all" supports only hessian="diag" (a diagonal GGN over '
            "every layer).",
            hessian,
        )
    if isinstance(prior, str) and prior == "gridsearch":
        if validation_data is None:
            raise _validation.invalid(
                "validation_data",
                'prior_precision="gridsearch" needs validation data '
                "`(x_val, y_val)`.",
                validation_data,
            )
    if validation_data is not None and (
        not isinstance(validation_data, (tuple, list))
        or len(validation_data) != 2
    ):
        raise _validation.invalid(
            "validation_data",
            "Expected a tuple `(x_val, y_val)`.",
            _validation.summary(validation_data),
        )
    head = _Head(model, likelihood, subset)
    n = _num_examples(x)
    if n == 0:
        raise _validation.invalid("x", "Expected at least one example.", x)
    if likelihood == "classification":
        y = _labels(y, n, head.outputs)
    else:
        y = _targets(y, n, head.outputs)
    if validation_data is not None:
        x_val, y_val = validation_data
        n_val = _num_examples(x_val)
        if likelihood == "classification":
            y_val = _labels(y_val, n_val, head.outputs)
        else:
            y_val = _targets(y_val, n_val, head.outputs)
        validation_data = (x_val, y_val)
    if subset == "last_layer":
        curvature = _LastLayer(head, likelihood, hessian)
    else:
        from keras_bayes import _laplace_all

        curvature = _laplace_all.AllLayers(head, likelihood)
    if not isinstance(prior, str) and np.ndim(prior) == 1:
        if prior.size != curvature.num_groups:
            raise _validation.invalid(
                "prior_precision",
                f"Expected one precision per layer ({curvature.num_groups}).",
                _validation.summary(prior),
            )
    curvature.accumulate(x, y, n, batch_size)
    laplace = Laplace(
        curvature, likelihood, subset, hessian, prior_structure, batch_size
    )
    if isinstance(prior, str) and prior == "marglik":
        laplace.prior_precision = laplace.optimal_prior_precision()
    elif isinstance(prior, str):
        laplace.prior_precision = laplace._gridsearch(*validation_data)
    else:
        laplace.prior_precision = prior
    return laplace


# The last layer's curvature lives in its own module, which reads this
# module's helpers; imported last, when they all exist.
from keras_bayes._laplace_last import _LastLayer  # noqa: E402
from keras_bayes._laplace_posterior import Laplace  # noqa: E402
