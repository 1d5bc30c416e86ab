"""`Laplace.to_bayesian_model`: the Laplace posterior in keras-bayes layers."""

import math

import keras
import numpy as np

from keras_bayes import _validation, priors
from keras_bayes.conversion import to_bayesian
from keras_bayes.workflows import is_bayesian

COVARIANCES = ("diagonal",)
ESTIMATORS = ("reparameterization", "flipout")


def to_bayesian_model(laplace, covariance, estimator):
    """See `Laplace.to_bayesian_model`."""
    if covariance is not None:
        covariance = _choice(covariance, "covariance", COVARIANCES)
    estimator = _choice(estimator, "estimator", ESTIMATORS)
    if laplace.hessian != "diag" and covariance is None:
        raise _validation.invalid(
            "covariance",
            f'The posterior of hessian="{laplace.hessian}" correlates the '
            "weights, which a `MeanFieldNormal` posterior cannot hold. Pass "
            'covariance="diagonal" to keep its exact marginal variances '
            "(the correlations dropped).",
            covariance,
        )
    variances = laplace.posterior_variances()
    precisions = np.broadcast_to(
        np.asarray(laplace.prior_precision, "float64"), (len(variances),)
    )
    converted = to_bayesian(
        laplace.model,
        estimator=estimator,
        layers=list(variances),
        kl_weight=1.0 / laplace.num_examples,
        posterior_value="sample",
    )
    layer_priors = {
        name: priors.Normal(0.0, 1.0 / math.sqrt(delta))
        for name, delta in zip(variances, precisions)
    }

    def stochastic_bias(layer):
        # `to_bayesian` keeps biases as point estimates; the Laplace
        # posterior covers them, so each covered layer is made again from
        # its config with a `MeanFieldNormal` bias and the Laplace prior.
        if not (is_bayesian(layer) and layer.name in variances):
            return layer
        config = layer.get_config()
        prior = layer_priors[layer.name]
        config["kernel_prior"] = prior
        if config.get("use_bias", False):
            config["bias_posterior"] = "mean_field_normal"
            config["bias_prior"] = prior
        return type(layer).from_config(config)

    model = keras.models.clone_model(converted, clone_function=stochastic_bias)
    found = {}
    for layer in model._flatten_layers(include_self=False):
        if is_bayesian(layer) and layer.name in variances:
            found[layer.name] = layer
    missing = sorted(set(variances) - set(found))
    if missing:
        raise ValueError(
            f"to_bayesian_model could not place the posterior of the layers "
            f"{missing}: they are not in the model's top-level graph."
        )
    # Every variable gets a buffer of its own: on JAX the copies can share
    # the trained model's arrays, which a compiled `predict` of the new
    # model may donate (and so delete under the trained model).
    for variable in model.variables:
        variable.assign(np.array(keras.ops.convert_to_numpy(variable)))
    for name, weights in variances.items():
        layer = found[name]
        for path, (loc, variance) in weights.items():
            weight = layer.posterior_weight(path.split("/")[-1])
            weight.assign(loc, np.sqrt(variance))
    return model


def _choice(value, name, options):
    if not isinstance(value, str) or value.lower() not in options:
        listed = ", ".join(f'"{o}"' for o in options)
        raise _validation.invalid(name, f"Expected one of {listed}.", value)
    return value.lower()
