"""Bayesian dense layers: heads for Bayesian CNNs."""

from keras_bayes.layers import _docs
from keras_bayes.layers.geometry import DenseGeometry
from keras_bayes.layers.kernel import KernelLayer, bayesian_class

ARGS_DOC = _docs.layer_doc(
    "",
    "        units: number of output units.\n"
    "        activation: activation applied to the outputs.\n"
    "        use_bias: whether the layer has a bias.\n"
    + _docs.BAYESIAN_ARGS
    + _docs.CONTROL_ARGS,
    """
    Input shape:
        `(batch, ..., in_features)`. With a `batch_shape`:
        `(batch, in_features)` (fed to every member) or
        `(batch, *batch_shape, in_features)`.

    Output shape:
        `(batch, ..., units)`; with a `batch_shape`,
        `(batch, *batch_shape, units)`.
""",
    """\
    >>> head = kb.layers.DenseFlipout(10)
    >>> head(np.zeros((4, 32))).shape
    (4, 10)
""",
).lstrip()


class VariationalDense(DenseGeometry, KernelLayer):
    """Base of the Bayesian dense layers; subclasses fix the estimator."""


DenseReparameterization = bayesian_class(
    "DenseReparameterization",
    VariationalDense,
    "reparameterization",
    "Dense layer with a weight posterior, reparameterization estimator.\n\n"
    "    One kernel draw per call, shared by the batch.\n",
    ARGS_DOC,
)


DenseFlipout = bayesian_class(
    "DenseFlipout",
    VariationalDense,
    "flipout",
    "Dense layer with a weight posterior, Flipout estimator.\n\n"
    "    `y = x @ loc + s_out * ((x * s_in) @ (scale * eps))`, signs per "
    "example\n    and unit: decorrelated perturbations within a batch.\n",
    ARGS_DOC,
)


DenseLocalReparameterization = bayesian_class(
    "DenseLocalReparameterization",
    VariationalDense,
    "local_reparameterization",
    "Dense layer with a weight posterior, local reparameterization.\n\n"
    "    Samples the pre-activations, `y ~ N(x @ loc + b, x**2 @ "
    "scale**2)`,\n    independently per example and unit (Kingma et al. "
    "2015): the lowest\n    gradient variance of the three estimators.\n",
    ARGS_DOC,
)
