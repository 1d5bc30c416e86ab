"""keras-bayes: Bayesian (variational) convolution layers for Keras 3."""

from keras_bayes import layers, posteriors, priors
from keras_bayes.workflows import set_posterior_value

__version__ = "0.1.0"
