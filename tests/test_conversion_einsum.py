"""`to_bayesian` and `to_deterministic` on `keras.layers.EinsumDense`.

A standalone `EinsumDense` (a transformer's projections and MLP, written
with equations) becomes `EinsumDense<estimator>` with its kernel as the
posterior mean, exactly in mean mode, and comes back as the Keras layer.
`MultiHeadAttention` and keras-hub's transformers, which make their
`EinsumDense` layers in `build`: `tests/test_conversion_transformers.py`.
"""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_bayes as kb


def _model():
    inputs = keras.Input((6, 8))
    hidden = keras.layers.EinsumDense(
        "abc,cd->abd",
        output_shape=(6, 12),
        bias_axes="d",
        activation="relu",
        name="projection",
    )(inputs)
    hidden = keras.layers.EinsumDense(
        "abc,cde->abde", output_shape=(6, 2, 3), name="heads"
    )(hidden)
    hidden = keras.layers.Flatten()(hidden)
    outputs = keras.layers.Dense(3, name="head")(hidden)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    model.set_weights(
        [rng.normal(size=w.shape).astype("float32") for w in model.weights]
    )
    return model


@pytest.mark.parametrize("estimator", ["flipout", "reparameterization"])
def test_einsum_dense_converts_exactly_and_back(estimator):
    model = _model()
    x = np.random.default_rng(1).normal(size=(4, 6, 8)).astype("float32")
    expected = ops.convert_to_numpy(model(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        bayesian = kb.to_bayesian(model, estimator=estimator)
    suffix = kb.conversion.table.CLASS_SUFFIXES[estimator]
    projection = bayesian.get_layer("projection")
    assert type(projection).__name__ == "EinsumDense" + suffix
    assert type(bayesian.get_layer("heads")).__name__ == "EinsumDense" + suffix
    np.testing.assert_array_equal(
        ops.convert_to_numpy(projection.kernel_loc),
        ops.convert_to_numpy(model.get_layer("projection").kernel),
    )
    # MOPED: scale = 0.1 |w| (the 1e-5 floor aside).
    _, scale = projection.posterior_weight("kernel").moments()
    kernel = ops.convert_to_numpy(model.get_layer("projection").kernel)
    np.testing.assert_allclose(
        scale, 0.1 * np.abs(kernel), rtol=1e-4, atol=2e-5
    )
    kb.set_posterior_value(bayesian, "mean")
    np.testing.assert_array_equal(ops.convert_to_numpy(bayesian(x)), expected)
    plain = kb.to_deterministic(bayesian)
    assert type(plain.get_layer("heads")) is keras.layers.EinsumDense
    assert plain.get_layer("heads").bias is None
    np.testing.assert_array_equal(ops.convert_to_numpy(plain(x)), expected)
