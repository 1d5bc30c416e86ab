"""Bayesian dense layers: heads for Bayesian CNNs."""

from keras_bayes._export import register
from keras_bayes.layers import variational
from keras_bayes.layers.linear_maps import DenseMap

_ARGS_DOC = """
    Args:
        units: number of output units.
        activation: activation applied to the outputs.
        use_bias: whether the layer has a bias.
        kernel_posterior, kernel_prior, bias_posterior, bias_prior,
        kl_weight, posterior_value, seed: as in `Conv2DFlipout`.
        activity_regularizer: as in Keras.
        batch_shape: shape of a batch of independent posteriors (members);
            defaults to `()`.

    Input shape:
        `(batch, ..., in_features)`. With a `batch_shape`:
        `(batch, in_features)` (fed to every member) or
        `(batch, *batch_shape, in_features)`.

    Output shape:
        `(batch, ..., units)`; with a `batch_shape`,
        `(batch, *batch_shape, units)`.
"""


class VariationalDense(variational.VariationalLayer):
    """Base of the Bayesian dense layers; subclasses fix the estimator."""

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_posterior="mean_field_normal",
        kernel_prior="normal",
        bias_posterior="deterministic",
        bias_prior=None,
        kl_weight=1.0,
        posterior_value="sample",
        seed=None,
        activity_regularizer=None,
        batch_shape=(),
        **kwargs,
    ):
        super().__init__(
            activation=activation,
            use_bias=use_bias,
            kernel_posterior=kernel_posterior,
            kernel_prior=kernel_prior,
            bias_posterior=bias_posterior,
            bias_prior=bias_prior,
            kl_weight=kl_weight,
            posterior_value=posterior_value,
            seed=seed,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )
        self._linear_map = DenseMap(units, batch_shape=batch_shape)

    units = property(lambda self: self._linear_map.filters)


@register
class DenseReparameterization(VariationalDense):
    __doc__ = (
        "Dense layer with a weight posterior, reparameterization "
        "estimator.\n\n    One kernel draw per call, shared by the batch.\n"
        + _ARGS_DOC
    )
    estimator = variational.REPARAMETERIZATION


@register
class DenseFlipout(VariationalDense):
    __doc__ = (
        "Dense layer with a weight posterior, Flipout estimator.\n\n"
        "    `y = x @ loc + s_out * ((x * s_in) @ (scale * eps))`, signs per "
        "example\n    and unit: decorrelated perturbations within a batch.\n"
        + _ARGS_DOC
    )
    estimator = variational.FLIPOUT


@register
class DenseLocalReparameterization(VariationalDense):
    __doc__ = (
        "Dense layer with a weight posterior, local reparameterization.\n\n"
        "    Samples the pre-activations, `y ~ N(x @ loc + b, x**2 @ "
        "scale**2)`,\n    independently per example and unit (Kingma et al. "
        "2015): the lowest\n    gradient variance of the three estimators.\n"
        + _ARGS_DOC
    )
    estimator = variational.LOCAL_REPARAMETERIZATION
