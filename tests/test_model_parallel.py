"""Model-parallel posteriors: JAX `keras.distribution.ModelParallel`.

Over a 2x2 mesh of virtual CPU devices (`batch` x `model`,
`XLA_FLAGS=--xla_force_host_platform_device_count=4`):

- a `LayoutMap` entry written for a weight's name shards every variable of
  its posterior: `kernel_loc` and `kernel_untransformed_scale` of
  Flipout / Reparameterization layers (dense and einsum), a rank-1 layer's
  shared `kernel` and its `alpha` / `gamma` factors; variables no entry
  names (`kl_weight`, `posterior_sample`, the seed state) are replicated.
  Each variable's value is checked for the sharding the map gives.
- one `fit` step from the same weights gives the single-device loss, KL and
  updated weights: in mean mode (deterministic outputs) and in sample mode
  (the same draws: the random stream does not depend on the sharding);
- a keras-hub backbone's own layout map (`GemmaBackbone.get_layout_map`)
  shards a Bayesian transformer block whose layers carry the backbone's
  weight names;
- a keras-hub BERT backbone converted by `to_bayesian` under the
  distribution computes the original in mean mode, and a map keyed by its
  weight names shards every posterior of its attention and MLP layers.

The device set-up must precede JAX's initialisation, so the checks run in
one fresh Python process (`WORKER`), started once for the module.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.backend_marks import only_on

ROOT = Path(__file__).resolve().parent.parent

jax_only = only_on(
    "jax",
    reason="keras.distribution.ModelParallel needs the JAX backend; the "
    "worker runs in a JAX process of its own",
)

WORKER = r"""
import json

import keras
import numpy as np

import keras_bayes as kb

devices = keras.distribution.list_devices("cpu")
assert len(devices) == 4, devices
MESH = keras.distribution.DeviceMesh((2, 2), ("batch", "model"), devices)
KL_WEIGHT = 0.01
rng = np.random.default_rng(0)
x = rng.normal(size=(8, 4, 8)).astype("float32")
y = rng.integers(0, 3, size=(8,))


def user_layout_map():
    layout_map = keras.distribution.LayoutMap(MESH)
    layout_map["query/kernel.*"] = (None, "model", None)
    layout_map["output/kernel.*"] = ("model", None, None)
    layout_map["rank1/kernel"] = (None, "model")
    layout_map["rank1/alpha.*"] = ("model",)
    layout_map["rank1/gamma.*"] = ("model",)
    layout_map["head/kernel.*"] = ("model", None)
    return layout_map


def build():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 8))
    h = kb.layers.EinsumDenseFlipout(
        "abc,cde->abde", (None, 2, 4), bias_axes="de", kl_weight=KL_WEIGHT,
        seed=1, name="query",
    )(inputs)
    h = kb.layers.EinsumDenseReparameterization(
        "abcd,cde->abe", (None, 8), bias_axes="e", kl_weight=KL_WEIGHT,
        seed=2, name="output",
    )(h)
    h = kb.layers.EinsumDenseRank1(
        "abc,cd->abd", (None, 6), bias_axes="d", kl_weight=KL_WEIGHT,
        seed=3, name="rank1",
    )(h)
    h = keras.layers.Flatten()(h)
    outputs = kb.layers.DenseFlipout(
        3, kl_weight=KL_WEIGHT, seed=4, name="head"
    )(h)
    model = keras.Model(inputs, outputs)
    weights = np.random.default_rng(1)
    for variable in model.trainable_weights:
        shift = -3.0 if "untransformed_scale" in variable.path else 0.0
        shift = 1.0 if variable.path.endswith("_loc") and (
            "alpha" in variable.path or "gamma" in variable.path) else shift
        variable.assign(
            weights.normal(shift, 0.3, size=variable.shape).astype("float32")
        )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def shardings(model):
    result = {}
    for variable in model.weights:
        spec = tuple(variable.value.sharding.spec)
        spec = spec + (None,) * (len(variable.shape) - len(spec))
        result[variable.path] = [
            list(a) if isinstance(a, tuple) else a for a in spec
        ]
    return result


def run():
    # One SGD step in mean mode, then, from the same weights, one in
    # sample mode: one compiled step (the mode is a variable).
    model = build()
    start = [keras.ops.convert_to_numpy(v) for v in model.trainable_weights]
    steps = {}
    for mode in ("mean", "sample"):
        for variable, value in zip(model.trainable_weights, start):
            variable.assign(value)
        kb.set_posterior_value(model, mode)
        history = model.fit(x, y, batch_size=8, shuffle=False, verbose=0)
        steps[mode] = {
            "loss": float(history.history["loss"][0]),
            "kl": float(history.history["kl"][0]),
            "weights": {
                v.path: keras.ops.convert_to_numpy(v)
                .astype("float64")
                .ravel()
                .tolist()
                for v in model.trainable_weights
            },
        }
    return model, steps


results = {"single": run()[1]}
keras.distribution.set_distribution(
    keras.distribution.ModelParallel(
        layout_map=user_layout_map(), batch_dim_name="batch"
    )
)
model, results["parallel"] = run()
results["user_shardings"] = shardings(model)


# A keras-hub backbone's layout map on a Bayesian block with its names.
from keras_hub.models import GemmaBackbone

hub_map = GemmaBackbone.get_layout_map(MESH)


def hub_block():
    tokens = keras.Input((4,), dtype="int32")
    h = keras.layers.Embedding(16, 8, name="token_embedding")(tokens)
    block = "decoder_block_0_attention_"
    heads = {}
    for name in ("query", "key", "value"):
        heads[name] = kb.layers.EinsumDenseFlipout(
            "btd,ndh->btnh", (None, 2, 4), name=block + name
        )(h)
    scores = keras.ops.einsum("btnh,bsnh->bnts", heads["query"], heads["key"])
    attended = keras.ops.einsum(
        "bnts,bsnh->btnh", keras.ops.softmax(scores), heads["value"]
    )
    h = h + kb.layers.EinsumDenseReparameterization(
        "btnh,nhd->btd", (None, 8), name=block + "attention_output"
    )(attended)
    gate = kb.layers.EinsumDenseFlipout(
        "btd,df->btf", (None, 16), name="decoder_block_0_ffw_gating"
    )(h)
    up = kb.layers.EinsumDenseRank1(
        "btd,df->btf", (None, 16), name="decoder_block_0_ffw_gating_2"
    )(h)
    h = h + kb.layers.EinsumDenseFlipout(
        "btf,fd->btd", (None, 8), name="decoder_block_0_ffw_linear"
    )(keras.activations.gelu(gate) * up)
    return keras.Model(tokens, h)


def weight_path(path):
    for suffix in ("_loc", "_untransformed_scale"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def axes(layout):
    return None if layout is None else list(layout.axes)


for name, layout_map in (
    ("hub", hub_map),
    ("hub_posterior", kb.distribution.posterior_layout_map(hub_map)),
):
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(
            layout_map=layout_map, batch_dim_name="batch"
        )
    )
    model = hub_block()
    if name == "hub_posterior":  # the sharded block runs
        ids = np.random.default_rng(2).integers(0, 16, size=(4, 4))
        out = model.predict(ids.astype("int32"), batch_size=4, verbose=0)
        assert np.all(np.isfinite(out))
    results[name] = {
        "shardings": shardings(model),
        "variable_layouts": {
            v.path: axes(hub_map[v.path]) for v in model.weights
        },
        "weight_layouts": {
            v.path: axes(hub_map[weight_path(v.path)]) for v in model.weights
        },
    }


# A keras-hub BERT backbone converted under the distribution: its layers,
# made in `build`, are Bayesian, and a map keyed by keras-hub's weight
# names (BertBackbone has no `get_layout_map`) shards their posteriors.
from keras_hub.models import BertBackbone

keras.distribution.set_distribution(None)
keras.utils.set_random_seed(0)
bert = BertBackbone(
    vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16,
    intermediate_dim=32, max_sequence_length=12,
)
tokens = {
    "token_ids": rng.integers(0, 50, size=(4, 12)).astype("int32"),
    "segment_ids": rng.integers(0, 2, size=(4, 12)).astype("int32"),
    "padding_mask": np.ones((4, 12), "int32"),
}
expected = bert.predict(tokens, verbose=0)
bert_map = keras.distribution.LayoutMap(MESH)
bert_map["transformer_layer.*(query|key|value).kernel"] = (None, "model", None)
bert_map["transformer_layer.*attention_output.kernel"] = ("model", None, None)
bert_map["transformer_layer.*intermediate_dense.kernel"] = (None, "model")
bert_map["transformer_layer.*feedforward_output_dense.kernel"] = ("model", None)
keras.distribution.set_distribution(
    keras.distribution.ModelParallel(
        layout_map=kb.distribution.posterior_layout_map(bert_map),
        batch_dim_name="batch",
    )
)
converted = kb.to_bayesian(bert, posterior_value="mean")
got = converted.predict(tokens, batch_size=4, verbose=0)
results["bert"] = {
    "shardings": shardings(converted),
    "bayesian": len(kb.workflows.bayesian_layers(converted)),
    "max_difference": max(
        float(np.max(np.abs(got[key] - expected[key]))) for key in expected
    ),
}
print("RESULT " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ)
    env["KERAS_BACKEND"] = "jax"
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run(
        [sys.executable, "-c", WORKER],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [
        line for line in proc.stdout.splitlines() if line.startswith("RESULT ")
    ]
    assert proc.returncode == 0 and lines, (
        f"worker failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n"
        f"{proc.stderr[-8000:]}"
    )
    return json.loads(lines[-1][len("RESULT ") :])


# The layouts `user_layout_map` gives, by variable path; every other
# variable is replicated.
USER_LAYOUTS = {
    "query/kernel_loc": [None, "model", None],
    "query/kernel_untransformed_scale": [None, "model", None],
    "output/kernel_loc": ["model", None, None],
    "output/kernel_untransformed_scale": ["model", None, None],
    "rank1/kernel": [None, "model"],
    "rank1/alpha_loc": ["model"],
    "rank1/alpha_untransformed_scale": ["model"],
    "rank1/gamma_loc": ["model"],
    "rank1/gamma_untransformed_scale": ["model"],
    "head/kernel_loc": ["model", None],
    "head/kernel_untransformed_scale": ["model", None],
}


@jax_only
def test_posterior_variables_follow_the_user_layout(results):
    shardings = results["user_shardings"]
    for path, layout in USER_LAYOUTS.items():
        assert shardings[path] == layout, (path, shardings[path])
    replicated = set(shardings) - set(USER_LAYOUTS)
    # Biases, control variables and seed states: replicated.
    assert {"query/bias_loc", "query/kl_weight", "rank1/bias"} <= replicated
    for path in replicated:
        assert all(axis is None for axis in shardings[path]), path


@jax_only
@pytest.mark.parametrize("mode", ["mean", "sample"])
def test_fit_step_equals_the_single_device_run(results, mode):
    single = results["single"][mode]
    parallel = results["parallel"][mode]
    # The KL must be a real share of the loss to be checked.
    assert single["kl"] > 0.1 * single["loss"]
    np.testing.assert_allclose(parallel["kl"], single["kl"], rtol=1e-5)
    # Sums over sharded axes in another order: float32 round-off.
    np.testing.assert_allclose(parallel["loss"], single["loss"], rtol=1e-5)
    assert set(parallel["weights"]) == set(single["weights"])
    for path, values in single["weights"].items():
        np.testing.assert_allclose(
            parallel["weights"][path], values, rtol=1e-5, atol=1e-6
        )


KERNELS = [
    f"decoder_block_0_{name}/kernel_{suffix}"
    for name in (
        "attention_query",
        "attention_key",
        "attention_value",
        "attention_attention_output",
        "ffw_gating",
        "ffw_linear",
    )
    for suffix in ("loc", "untransformed_scale")
]


def _check_layouts(shardings, layouts):
    for path, axes in layouts.items():
        want = axes or [None] * len(shardings[path])
        assert shardings[path] == want, (path, shardings[path], want)


@jax_only
def test_keras_hub_layout_map_alone_leaves_posteriors_replicated(results):
    # Keras matches a key against the whole path: the backbone's
    # "...query.kernel" names `query/kernel`, not `query/kernel_loc`.
    hub = results["hub"]
    _check_layouts(hub["shardings"], hub["variable_layouts"])
    for path in KERNELS:
        assert hub["variable_layouts"][path] is None
    # Plain weights of the names the map was written for are sharded,
    # the rank-1 layer's shared point kernel among them.
    assert hub["variable_layouts"]["decoder_block_0_ffw_gating_2/kernel"] == [
        "batch",
        "model",
    ]
    assert hub["shardings"]["token_embedding/embeddings"] == ["model", "batch"]


@jax_only
def test_posterior_layout_map_shards_posteriors_as_their_weights(results):
    hub = results["hub_posterior"]
    layouts = hub["weight_layouts"]
    for path in KERNELS:
        assert layouts[path] is not None, path
    # The backbone's query layout, (model, batch, None), on both variables.
    for suffix in ("loc", "untransformed_scale"):
        path = f"decoder_block_0_attention_query/kernel_{suffix}"
        assert hub["shardings"][path] == ["model", "batch", None]
    _check_layouts(hub["shardings"], layouts)


@jax_only
def test_converted_keras_hub_bert_shards_its_posteriors(results):
    bert = results["bert"]
    assert bert["bayesian"] == 13
    # Mean mode on the mesh computes the single-device original.
    assert bert["max_difference"] < 1e-5
    shardings = bert["shardings"]
    block = "transformer_layer_1/self_attention_layer/"
    for suffix in ("loc", "untransformed_scale"):
        for name in ("query", "key", "value"):
            path = f"{block}{name}/kernel_{suffix}"
            assert shardings[path] == [None, "model", None], path
        path = f"{block}attention_output/kernel_{suffix}"
        assert shardings[path] == ["model", None, None]
        ffw = "transformer_layer_0/feedforward_"
        path = f"{ffw}intermediate_dense/kernel_{suffix}"
        assert shardings[path] == [None, "model"]
        path = f"{ffw}output_dense/kernel_{suffix}"
        assert shardings[path] == ["model", None]
    assert shardings["pooled_dense/kernel_loc"] == [None, None]


def test_posterior_layout_map_rejects_other_objects():
    import keras_bayes as kb

    with pytest.raises(
        ValueError,
        match=r"^Invalid value for argument `layout_map`\. Expected a "
        r"`keras\.distribution\.LayoutMap`\. Received: layout_map=\{\}$",
    ):
        kb.distribution.posterior_layout_map({})
