"""Bring trained models from TensorFlow Probability and bayesian-torch.

- `load_tfp_weights(model, filepath)`: a tf_keras `tfp.layers` model's
  weights onto a keras-bayes model of the same architecture.
- `from_tfp(filepath)`: a Keras 3 model rebuilt from a tf_keras `.h5` /
  `.keras` model file, without TensorFlow Probability installed.
- `load_bayesian_torch(model, state_dict_or_path)`: a bayesian-torch
  `state_dict` onto a keras-bayes model with the same layers in order.
"""

from keras_bayes.migrate.bayesian_torch import load_bayesian_torch
from keras_bayes.migrate.tfp import from_tfp, load_tfp_weights
