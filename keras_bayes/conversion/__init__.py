"""Turn a trained Keras model into a Bayesian one (MOPED initialisation)."""

from keras_bayes.conversion.blocks import ConvertedBlock
from keras_bayes.conversion.convert import to_bayesian
