"""Data-parallel training counts the KL once per step, not once per replica.

A small Bayesian CNN in mean mode (deterministic outputs, closed-form KL)
is evaluated and trained for one SGD step on one device and data-parallel
over two CPU devices, from the same weights:

- JAX: `keras.distribution.DataParallel` over two virtual host devices
  (`XLA_FLAGS=--xla_force_host_platform_device_count=2`);
- TensorFlow: `tf.distribute.MirroredStrategy` over two logical CPUs;
- PyTorch (no `keras.distribution` support): the recipe of
  `docs/distributed.md`, `DistributedDataParallel` around the Keras model
  with a torch training step, two ranks over gloo.

The loss must equal `cross-entropy + sum(kl_weight * KL)` computed with
NumPy from the weights (a KL counted per replica would add it twice), and
the weights after the step must equal the single-device ones (a KL
gradient counted per replica would double the KL's share of the update).

The device set-up has to precede the backend's initialisation, so each case
runs in fresh Python processes (`WORKER`, below, which imports the shared
test helpers from the repository root), started from the pytest process of
the matching backend.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.backend_marks import only_on

ROOT = Path(__file__).resolve().parent.parent

# The KL's share of the loss is about 3 against a cross-entropy of about 1:
# counted twice, the loss would be off by far more than float32 rounding.
WORKER = r"""
import json
import os

BACKEND = os.environ["KERAS_BACKEND"]
REPLICAS = 2
if BACKEND == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS
    )

import keras
import numpy as np

import keras_bayes as kb
from tests.helpers import layer_kl
from tests.references import softmax_cross_entropy

KL_WEIGHT = 0.01
BATCH = 8  # global batch: 4 examples per replica
rng = np.random.default_rng(0)
x = rng.normal(size=(2 * BATCH, 6, 6, 1)).astype("float32")
y = rng.integers(0, 3, size=(2 * BATCH,))


def build():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            kb.layers.Conv2DFlipout(
                2, 3, activation="relu", kl_weight=KL_WEIGHT, seed=1
            ),
            keras.layers.Flatten(),
            kb.layers.DenseReparameterization(3, kl_weight=KL_WEIGHT, seed=2),
        ]
    )
    kb.set_posterior_value(model, "mean")
    # The same weights in every run, whatever the initializers drew.
    weights = np.random.default_rng(1)
    for variable in model.trainable_weights:
        shift = -3.0 if "untransformed_scale" in variable.path else 0.0
        variable.assign(
            weights.normal(shift, 0.3, size=variable.shape).astype("float32")
        )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def numpy_loss(model, xs, ys):
    # Cross-entropy of the mean-mode logits plus the closed-form KL of
    # N(loc, scale) from the N(0, 1) priors, in float64.
    logits = model.predict(xs, verbose=0)
    cross_entropy = softmax_cross_entropy(logits, ys)
    kl = sum(
        layer.kl_weight * layer_kl(layer)
        for layer in kb.workflows.bayesian_layers(model)
    )
    return float(cross_entropy), float(kl)


def run(model):
    cross_entropy, kl = numpy_loss(model, x[:BATCH], y[:BATCH])
    evaluated = model.evaluate(
        x[:BATCH], y[:BATCH], batch_size=BATCH, verbose=0
    )
    history = model.fit(
        x[:BATCH], y[:BATCH], batch_size=BATCH, shuffle=False, verbose=0
    )
    return {
        "numpy_cross_entropy": cross_entropy,
        "numpy_kl": kl,
        "evaluate": float(evaluated),
        "fit": float(history.history["loss"][0]),
        "fit_kl": float(history.history["kl"][0]),
        "weights": [
            keras.ops.convert_to_numpy(v).astype("float64").ravel().tolist()
            for v in model.trainable_weights
        ],
    }


results = {"single": run(build())}
if BACKEND == "jax":
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == REPLICAS, devices
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices)
    )
    results["replicas"] = len(devices)
    results["parallel"] = run(build())
elif BACKEND == "tensorflow":
    strategy = tf.distribute.MirroredStrategy(
        [f"/cpu:{i}" for i in range(REPLICAS)]
    )
    results["replicas"] = strategy.num_replicas_in_sync
    with strategy.scope():
        model = build()
    results["parallel"] = run(model)
else:
    # One process per rank: DistributedDataParallel around the Keras model
    # (a torch Module) and a plain torch training step.
    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    dist.init_process_group(
        "gloo",
        init_method=os.environ["INIT_METHOD"],
        rank=rank,
        world_size=REPLICAS,
    )
    model = build()
    ddp_model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp_model.parameters(), lr=0.1)
    shard = slice(rank * BATCH // REPLICAS, (rank + 1) * BATCH // REPLICAS)
    logits = ddp_model(torch.as_tensor(x[shard]))
    loss = torch.nn.functional.cross_entropy(
        logits, torch.as_tensor(y[shard])
    ) + sum(model.losses)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    dist.destroy_process_group()
    results["replicas"] = REPLICAS
    results["parallel"] = {
        "local_loss": float(loss.detach()),
        "weights": [
            keras.ops.convert_to_numpy(v).astype("float64").ravel().tolist()
            for v in model.trainable_weights
        ],
    }
print("RESULT " + json.dumps(results))
"""


def _start_worker(backend, extra_env):
    env = dict(os.environ)
    env.update(extra_env)
    env["KERAS_BACKEND"] = backend
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.Popen(
        [sys.executable, "-c", WORKER],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc):
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"worker failed (exit {proc.returncode}):\n{stdout[-4000:]}\n"
        f"{stderr[-8000:]}"
    )
    return json.loads(lines[-1][len("RESULT ") :])


def _check_single(single):
    """The single-device run against the NumPy loss; returns that loss."""
    expected = single["numpy_cross_entropy"] + single["numpy_kl"]
    # The KL must matter, or counting it twice would go unnoticed.
    assert single["numpy_kl"] > 2.0
    # float32 forward passes against a float64 reference: a few float32
    # ulps of a loss of about 4.
    np.testing.assert_allclose(single["evaluate"], expected, rtol=1e-5)
    # `fit` reports the loss of its only step, before the update.
    np.testing.assert_allclose(single["fit"], expected, rtol=1e-5)
    # `fit` shows the weighted KL apart, as `kl`: the term in the loss.
    np.testing.assert_allclose(single["fit_kl"], single["numpy_kl"], rtol=1e-5)
    return expected


def _check_weights(single, parallel):
    # Gradients reduced over replicas in another order: float32 rounding of
    # updates of size ~0.1 * O(1).
    assert len(parallel["weights"]) == len(single["weights"])
    for w_single, w_parallel in zip(single["weights"], parallel["weights"]):
        np.testing.assert_allclose(w_parallel, w_single, rtol=1e-5, atol=1e-6)


def _check(results):
    assert results["replicas"] == 2
    single, parallel = results["single"], results["parallel"]
    expected = _check_single(single)
    np.testing.assert_allclose(parallel["evaluate"], expected, rtol=1e-5)
    np.testing.assert_allclose(parallel["fit"], expected, rtol=1e-5)
    # The kl in History counts the KL once too, across replicas.
    np.testing.assert_allclose(
        parallel["fit_kl"], single["numpy_kl"], rtol=1e-5
    )
    _check_weights(single, parallel)


@only_on(
    "jax",
    reason="keras.distribution.DataParallel needs the JAX backend; the "
    "worker runs in a JAX process of its own",
)
def test_jax_data_parallel_counts_kl_once():
    worker = _start_worker(
        "jax", {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    )
    _check(_result(worker))


@only_on(
    "tensorflow",
    reason="tf.distribute.MirroredStrategy needs the TensorFlow backend; the "
    "worker runs in a TensorFlow process of its own",
)
def test_tensorflow_mirrored_strategy_counts_kl_once():
    _check(_result(_start_worker("tensorflow", {})))


@only_on(
    "torch",
    reason="torch.nn.parallel.DistributedDataParallel needs the torch "
    "backend; the two ranks run in torch processes of their own",
)
def test_torch_ddp_custom_loop_counts_kl_once(tmp_path):
    init_method = f"file://{tmp_path / 'rendezvous'}"
    workers = [
        _start_worker("torch", {"RANK": str(rank), "INIT_METHOD": init_method})
        for rank in range(2)
    ]
    ranks = [_result(worker) for worker in workers]
    expected = _check_single(ranks[0]["single"])
    # Each rank's loss is its shard's mean cross-entropy plus the whole KL;
    # DDP averages the gradients, so their mean is the single-device loss.
    local = [result["parallel"]["local_loss"] for result in ranks]
    np.testing.assert_allclose(np.mean(local), expected, rtol=1e-5)
    for result in ranks:
        _check_weights(ranks[0]["single"], result["parallel"])
