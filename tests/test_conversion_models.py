"""`kb.to_bayesian` on the architectures people bring (slow).

keras.applications ResNet50, MobileNet, MobileNetV2, MobileNetV3Small,
EfficientNetB0, EfficientNetV2B0, ConvNeXtTiny, DenseNet121, Xception,
NASNetMobile, InceptionV3 and VGG16, and keras-hub's ResNet, MobileNet and
EfficientNet backbones, built untrained and small (`tests/architectures.py`).
For each one, against the original model:

- every convertible layer is Bayesian, or (only while keras-bayes lacks the
  Bayesian class of its kind) named in the conversion's one warning;
- in mean mode the outputs equal the original's (the max |difference| is
  recorded as a junit property, `max_abs_difference`);
- the `.keras` round trip keeps the outputs;
- one `fit` step gives a finite loss.

Each model is built and converted once per module (a module-scoped
fixture) and shared by the four tests, which run in this order: the `fit`
step, last, changes the weights.

Not every architecture runs on every backend in a default run: all of them
run on PyTorch, a share on TensorFlow and JAX (`CI_BACKENDS` in
`tests/architectures.py` says which and why; the others are skipped with
that reason). `KERAS_BAYES_ALL_ARCHITECTURES=1` runs all of them on every
backend.
"""

import collections
import os
import warnings

import keras
import numpy as np
import pytest

import keras_bayes as kb
from keras_bayes.conversion import selection, table
from tests import architectures
from tests import conversion_checks as checks
from tests.backend_marks import only_on

pytestmark = pytest.mark.slow

_NO_KERAS_HUB = pytest.mark.skipif(
    not architectures.keras_hub_available(),
    reason="keras-hub is not installed (requirements-peers.txt installs it)",
)


_ALL = os.environ.get("KERAS_BAYES_ALL_ARCHITECTURES") == "1"


def _param(name):
    marks = [_NO_KERAS_HUB] if name in architectures.KERAS_HUB else []
    backends = architectures.CI_BACKENDS[name]
    if not _ALL:
        marks.append(
            only_on(
                *backends,
                reason=f"{name} runs on {', '.join(backends)} in a default "
                "run (see tests/architectures.py, CI_BACKENDS); "
                "KERAS_BAYES_ALL_ARCHITECTURES=1 runs it here",
            )
        )
    return pytest.param(name, id=name, marks=marks)


class Case:
    """One architecture: the original, its conversion, inputs, warnings."""

    def __init__(self, name):
        build, input_shape = architectures.ARCHITECTURES[name]
        keras.utils.set_random_seed(0)
        self.name = name
        try:
            self.model = build()
        except ValueError as error:
            if "is not available with the" not in str(error):
                raise
            pytest.skip(f"Keras cannot build {name} here: {error}")
        checks.perturb(self.model)
        rng = np.random.default_rng(0)
        self.x = rng.uniform(0, 255, size=(2, *input_shape)).astype("float32")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.converted = kb.to_bayesian(self.model, seed=0)
        self.warnings = [
            str(w.message)
            for w in caught
            if issubclass(w.category, UserWarning)
            and str(w.message).startswith("to_bayesian")
        ]


@pytest.fixture(
    scope="module", params=[_param(n) for n in architectures.ARCHITECTURES]
)
def case(request):
    yield Case(request.param)
    keras.backend.clear_session()


def _missing_kind(layer):
    """True if keras-bayes has no Bayesian class for the layer's kind."""
    rule = table.RULES[type(layer)]
    return rule.bayesian_class("flipout") is None


def test_every_convertible_layer_is_bayesian(case, record_property):
    candidates = selection.candidates(case.model)
    assert candidates
    assert all(type(layer) in table.RULES for layer in candidates)
    missing = [layer for layer in candidates if _missing_kind(layer)]
    expected = collections.Counter(
        layer.name for layer in candidates if not _missing_kind(layer)
    )
    bayesian = kb.workflows.bayesian_layers(case.converted)
    assert collections.Counter(layer.name for layer in bayesian) == expected
    record_property("converted", f"{len(bayesian)}/{len(candidates)}")
    unconverted = [m for m in case.warnings if "deterministic" in m]
    if missing:
        assert len(unconverted) == 1
        for layer in missing:
            assert (
                f"'{layer.name}' ({type(layer).__name__}, " in (unconverted[0])
            )
    else:
        assert unconverted == []
    checks.assert_moped(case.model, case.converted, 0.1)


def test_mean_mode_equals_the_original(case, record_property):
    difference = checks.assert_mean_mode_equal(
        case.model, case.converted, case.x
    )
    record_property("max_abs_difference", difference)
    kb.set_posterior_value(case.converted, "sample")
    sampled = checks.numpy(case.converted(case.x))
    assert np.all(np.isfinite(sampled))
    assert checks.max_difference(sampled, case.model(case.x)) > 0


def test_keras_round_trip_keeps_the_outputs(case, tmp_path):
    kb.set_posterior_value(case.converted, "mean")
    path = tmp_path / "converted.keras"
    case.converted.save(path)
    loaded = keras.saving.load_model(path)
    assert len(kb.workflows.bayesian_layers(loaded)) == len(
        kb.workflows.bayesian_layers(case.converted)
    )
    # The same weights in a new model: equal up to the kernels' float
    # round-off (oneDNN's may differ between two instances of one model).
    checks.assert_mean_mode_equal(case.converted, loaded, case.x)


def test_one_fit_step_gives_a_finite_loss(case):
    model = case.converted
    kb.set_posterior_value(model, "sample")
    if len(model.output_shape) == 2:  # ten-class logits
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        y = np.array([1, 7])
    else:  # a backbone's feature map
        loss = "mse"
        y = np.zeros((2, *model.output_shape[1:]), "float32")
    # Eagerly: compiling the training step of a whole network costs more
    # than the step (the compiled step is tested on small models).
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3), loss=loss, run_eagerly=True
    )
    history = model.fit(case.x, y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
