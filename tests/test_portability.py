"""A `.keras` file written on one backend loads on another."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_bayes  # noqa: F401 (registers the layers for `load_model`)
from tests.backend_marks import BACKEND
from tests.helpers import to_numpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OTHER_BACKEND = {"tensorflow": "jax", "jax": "torch", "torch": "tensorflow"}

_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    import keras_bayes as kb

    path, x_path, y_path = sys.argv[1:]
    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        kb.layers.Conv2DFlipout(
            3, 3, padding="same", activation="relu", seed=5,
            kernel_prior=kb.priors.ScaleMixtureNormal(0.3, 1.5, 0.01),
            bias_posterior="mean_field_normal", bias_prior="normal"),
        keras.layers.Flatten(),
        kb.layers.DenseLocalReparameterization(4, kl_weight=0.125),
    ])
    model.layers[0].kl_weight = 0.5
    x = np.random.default_rng(0).normal(size=(3, 6, 6, 2)).astype("float32")
    kb.set_posterior_value(model, "mean")
    np.save(y_path, keras.ops.convert_to_numpy(model(x)))
    np.save(x_path, x)
    model.save(path)
    """
)


@pytest.mark.slow
def test_model_saved_on_another_backend_loads_here(tmp_path):
    writer = OTHER_BACKEND[BACKEND]
    path = str(tmp_path / "model.keras")
    x_path, y_path = str(tmp_path / "x.npy"), str(tmp_path / "y.npy")
    env = dict(os.environ, KERAS_BACKEND=writer, PYTHONPATH=ROOT)
    subprocess.run(
        [sys.executable, "-c", _WRITER, path, x_path, y_path],
        check=True,
        env=env,
        capture_output=True,
    )
    model = keras.saving.load_model(path)
    conv, dense = model.layers[0], model.layers[2]
    assert conv.kl_weight == 0.5 and dense.kl_weight == 0.125
    assert conv.posterior_value == "mean"
    assert conv.kernel_prior.get_config() == {
        "mixture_weight": 0.3,
        "scale1": 1.5,
        "scale2": 0.01,
    }
    np.testing.assert_allclose(
        to_numpy(model(np.load(x_path))),
        np.load(y_path),
        rtol=1e-5,
        atol=1e-6,
    )
