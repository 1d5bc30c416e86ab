"""`kb.to_bayesian` on transformers: keras-hub's ViT and BERT backbones (slow).

Both are built small with random weights. Their attention and MLP layers
are made in `build` (keras-hub's `TransformerEncoder` and ViT encoder
block make a `MultiHeadAttention`, which makes its `EinsumDense`
projections in its own `build`): the conversion builds each copied block
from its original's build config and puts Bayesian layers there. For each
backbone, against the original:

- every convertible layer is Bayesian and `to_bayesian` warns of nothing;
- in mean mode the outputs equal the original's (the max |difference| is
  recorded as a junit property, `max_abs_difference`), in sample mode they
  differ;
- the `.keras` round trip keeps the outputs, and `to_deterministic` gives
  back a plain model computing the original;
- the `layers=` selector converts only the classification head, or only
  the last block;
- one `fit` step gives a finite loss and a KL in the logs.

A standalone `keras.layers.MultiHeadAttention` converts the same way.
"""

import keras
import numpy as np
import pytest
from keras import ops, tree

import keras_bayes as kb
from keras_bayes.conversion import selection
from tests import architectures
from tests import conversion_checks as checks

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not architectures.keras_hub_available(),
        reason="keras-hub is not installed (requirements-peers.txt "
        "installs it)",
    ),
]

_TOKENS = 12
_VOCABULARY = 50


def _vit():
    import keras_hub

    return keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
    )


def _bert():
    import keras_hub

    return keras_hub.models.BertBackbone(
        vocabulary_size=_VOCABULARY,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=_TOKENS,
    )


def _inputs(name, batch=3):
    rng = np.random.default_rng(0)
    if name == "vit":
        return rng.normal(size=(batch, 32, 32, 3)).astype("float32")
    mask = np.ones((batch, _TOKENS), "int32")
    mask[0, -4:] = 0  # one padded sequence
    return {
        "token_ids": rng.integers(0, _VOCABULARY, (batch, _TOKENS)),
        "segment_ids": rng.integers(0, 2, (batch, _TOKENS)),
        "padding_mask": mask,
    }


# Per backbone: its builder, its last block's name, its head's name.
BACKBONES = {
    "vit": (_vit, "transformer_block_2", None),
    "bert": (_bert, "transformer_layer_1", "pooled_dense"),
}


def _outputs(model, x):
    return [checks.numpy(y) for y in tree.flatten(model(x))]


def _assert_outputs_equal(expected, got, rtol=1e-5):
    """Equal to float32 round-off; returns the max |difference|."""
    differences = []
    for a, b in zip(expected, got, strict=True):
        scale = max(1.0, float(np.max(np.abs(a))))
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * scale)
        differences.append(float(np.max(np.abs(a - b))))
    return max(differences)


class Case:
    def __init__(self, name):
        build, self.last_block, self.head = BACKBONES[name]
        keras.utils.set_random_seed(0)
        self.name = name
        self.model = build()
        checks.perturb(self.model)
        self.x = _inputs(name)
        self.converted, self.warnings = checks.convert_with_warnings(
            self.model, seed=0
        )


@pytest.fixture(scope="module", params=list(BACKBONES))
def case(request):
    yield Case(request.param)
    keras.backend.clear_session()


def test_every_layer_converts_without_a_warning(case):
    assert case.warnings == []
    candidates = selection.candidates(case.model)
    kinds = {type(layer).__name__ for layer in candidates}
    assert {"EinsumDense", "Dense"} <= kinds
    bayesian = kb.workflows.bayesian_layers(case.converted)
    assert sorted(layer.name for layer in bayesian) == sorted(
        layer.name for layer in candidates
    )
    # 2 blocks x (query, key, value, attention output, 2 MLP layers), and
    # the patch embedding (ViT) or the pooler (BERT).
    assert len(bayesian) == 13
    # MOPED, pairing the layers in order (names repeat across blocks).
    for source, layer in zip(candidates, bayesian, strict=True):
        assert layer.name == source.name
        kernel = checks.numpy(source.kernel)
        loc, scale = layer.posterior_weight("kernel").moments()
        np.testing.assert_array_equal(loc, kernel)
        np.testing.assert_allclose(
            scale, 0.1 * np.abs(kernel), rtol=1e-4, atol=2e-5
        )


def test_mean_mode_equals_the_original(case, record_property):
    kb.set_posterior_value(case.converted, "mean")
    expected = _outputs(case.model, case.x)
    difference = _assert_outputs_equal(
        expected, _outputs(case.converted, case.x)
    )
    record_property("max_abs_difference", difference)
    kb.set_posterior_value(case.converted, "sample")
    sampled = _outputs(case.converted, case.x)
    assert all(np.all(np.isfinite(y)) for y in sampled)
    assert max(np.max(np.abs(a - b)) for a, b in zip(expected, sampled)) > 0


def test_keras_round_trip_and_back_to_keras(case, tmp_path):
    kb.set_posterior_value(case.converted, "mean")
    path = tmp_path / "converted.keras"
    case.converted.save(path)
    loaded = keras.saving.load_model(path)
    assert len(kb.workflows.bayesian_layers(loaded)) == 13
    expected = _outputs(case.model, case.x)
    _assert_outputs_equal(expected, _outputs(loaded, case.x))
    plain = kb.to_deterministic(loaded)
    assert kb.workflows.bayesian_layers(plain) == []
    _assert_outputs_equal(expected, _outputs(plain, case.x))
    plain.save(tmp_path / "plain.keras")
    reloaded = keras.saving.load_model(tmp_path / "plain.keras")
    _assert_outputs_equal(expected, _outputs(reloaded, case.x))


def test_layers_selects_the_last_block_or_the_head(case):
    last, messages = checks.convert_with_warnings(
        case.model, layers=[case.last_block]
    )
    assert messages == []
    block = [
        layer
        for layer in case.model._flatten_layers()
        if layer.name == case.last_block
    ]
    inside = {
        layer.name
        for layer in block[0]._flatten_layers(include_self=False)
        if layer in selection.candidates(case.model)
    }
    names = [layer.name for layer in kb.workflows.bayesian_layers(last)]
    assert len(names) == 6 and set(names) == inside
    kb.set_posterior_value(last, "mean")
    _assert_outputs_equal(_outputs(case.model, case.x), _outputs(last, case.x))
    if case.head is not None:
        head, messages = checks.convert_with_warnings(
            case.model, layers=[case.head]
        )
        assert messages == []
        bayesian = kb.workflows.bayesian_layers(head)
        assert [layer.name for layer in bayesian] == [case.head]


def test_one_fit_step_gives_a_finite_loss_and_kl(case):
    model = case.converted
    kb.set_posterior_value(model, "sample")
    y = tree.map_structure(
        lambda out: np.zeros_like(checks.numpy(out)), model(case.x)
    )
    # Eagerly: compiling a whole network's training step costs more than
    # the step (compiled steps are tested on small models).
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3),
        loss=tree.map_structure(lambda _: "mse", model.output),
        run_eagerly=True,
    )
    history = model.fit(case.x, y, batch_size=3, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert history.history["kl"][0] > 0


def test_multi_head_attention_converts_exactly_and_back(tmp_path):
    inputs = keras.Input((6, 8))
    outputs = keras.layers.MultiHeadAttention(2, 4, name="attention")(
        inputs, inputs
    )
    model = keras.Model(inputs, outputs)
    checks.perturb(model)
    x = np.random.default_rng(1).normal(size=(2, 6, 8)).astype("float32")
    converted, messages = checks.convert_with_warnings(
        model, estimator="reparameterization"
    )
    assert messages == []
    attention = converted.get_layer("attention").layer
    for name in ("_query_dense", "_key_dense", "_value_dense"):
        projection = getattr(attention, name)
        assert type(projection) is kb.layers.EinsumDenseReparameterization
    assert type(attention._output_dense) is (
        kb.layers.EinsumDenseReparameterization
    )
    checks.assert_mean_mode_equal(model, converted, x)
    path = tmp_path / "attention.keras"
    converted.save(path)
    loaded = keras.saving.load_model(path)
    assert len(kb.workflows.bayesian_layers(loaded)) == 4
    checks.assert_mean_mode_equal(model, loaded, x)
    plain = kb.to_deterministic(loaded)
    assert type(plain.get_layer("attention")) is keras.layers.MultiHeadAttention
    np.testing.assert_array_equal(
        ops.convert_to_numpy(plain(x)), ops.convert_to_numpy(converted(x))
    )
