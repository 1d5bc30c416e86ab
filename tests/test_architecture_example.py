"""The worked examples of `docs/architecture.md` run as written."""

import re
from pathlib import Path

import keras
import numpy as np
from keras import ops

import keras_bayes as kb
from tests.layer_test import run_layer_test

DOC = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"


def _example(title):
    """The Python block after `<!-- example: title -->` in the doc."""
    text = DOC.read_text()
    pattern = rf"<!-- example: {re.escape(title)} -->\s*```python\n(.*?)```"
    match = re.search(pattern, text, re.DOTALL)
    assert match, f"no example '{title}' in {DOC.name}"
    return match.group(1)


def _run(title):
    namespace = {"__name__": f"architecture_example_{title.replace(' ', '_')}"}
    exec(compile(_example(title), str(DOC), "exec"), namespace)
    return namespace


def test_layer_kind_example_passes_the_layer_contract():
    scale_flipout = _run("layer kind")["ScaleFlipout"]
    run_layer_test(
        scale_flipout,
        {},
        (4, 3),
        (4, 3),
        expected_variable_names=[
            "kernel_loc",
            "kernel_untransformed_scale",
            "bias_loc",
            "kl_weight",
            "posterior_sample",
        ],
    )
    # Mean mode is x * loc + bias.
    layer = scale_flipout(posterior_value="mean")
    x = np.random.default_rng(0).normal(size=(2, 3)).astype("float32")
    layer.build(x.shape)
    loc = np.array([1.0, -2.0, 0.5], "float32")
    layer.kernel_loc.assign(loc)
    layer.bias_loc.assign(np.array([0.1, 0.2, 0.3], "float32"))
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer(x)), x * loc + [0.1, 0.2, 0.3], rtol=1e-6
    )


def test_posterior_family_example():
    family = _run("posterior family")["LogVarianceNormal"]
    layer = kb.layers.Conv2DFlipout(2, 3, kernel_posterior=family())
    layer(np.zeros((1, 5, 5, 1), "float32"))
    names = sorted(v.name for v in layer.trainable_weights)
    assert names == ["bias_loc", "kernel_loc", "kernel_log_variance"]
    # Scale exp(-6 / 2) against N(0, 1): the closed-form KL per weight is
    # -log(s) + (s**2 + m**2) / 2 - 1/2, summed over the 18 weights.
    loc = ops.convert_to_numpy(layer.kernel_loc).astype("float64")
    s = np.exp(-3.0)
    expected = np.sum(-np.log(s) + (s**2 + loc**2) / 2 - 0.5)
    np.testing.assert_allclose(
        float(ops.convert_to_numpy(layer.losses[0])), expected, rtol=1e-5
    )
    assert isinstance(
        layer.kernel_posterior,
        keras.saving.get_registered_object("keras_bayes>LogVarianceNormal"),
    )


def test_posterior_family_example_is_reached_through_values():
    family = _run("posterior family")["LogVarianceNormal"]
    layer = kb.layers.DenseFlipout(2, kernel_posterior=family())
    layer(np.zeros((1, 3), "float32"))
    weight = layer.posterior_weight("kernel")
    rng = np.random.default_rng(0)
    loc = rng.normal(size=(3, 2))
    scale = rng.uniform(0.1, 2.0, size=(3, 2))
    weight.assign(loc, scale)
    # Stored as the log-variance, read back as the scale.
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer.kernel_log_variance),
        2 * np.log(scale),
        rtol=1e-5,
    )
    got_loc, got_scale = weight.moments()
    np.testing.assert_allclose(got_loc, loc, rtol=1e-6)
    np.testing.assert_allclose(got_scale, scale, rtol=1e-5)
