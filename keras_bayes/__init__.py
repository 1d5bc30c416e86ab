"""keras-bayes: Bayesian (variational) convolution layers for Keras 3."""

from keras_bayes import (
    calibration,
    callbacks,
    config,
    conformal,
    distribution,
    laplace,
    layers,
    metrics,
    migrate,
    posteriors,
    priors,
    saving,
    uncertainty,
    workflows,
)
from keras_bayes.conversion import to_bayesian
from keras_bayes.deterministic import to_deterministic
from keras_bayes.workflows import set_posterior_value

__version__ = "0.1.0"
