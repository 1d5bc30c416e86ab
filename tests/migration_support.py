"""Support for the `kb.migrate` tests: peer models, refused loads.

Models trained by the real peers, TensorFlow Probability and bayesian-torch:
each generator in `tests/peers/` runs in a subprocess in the peer's own
environment (tf_keras for TFP, plain PyTorch for bayesian-torch) and writes
the saved models and the peer's reference outputs into a folder of the
system's temp directory. The folder's name carries a hash of the script and
of the peer's versions, and a lock file serialises its creation, so the
three backend processes of a run share one generation, and a later run with
the same peers reuses it.
"""

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest

PEERS = Path(__file__).resolve().parent / "peers"
INSTALL = "pip install --no-deps -c constraints.txt -r requirements-peers.txt"

TFP = {
    "script": "make_tfp_models.py",
    "modules": ("tensorflow", "tensorflow_probability", "tf_keras"),
    "distributions": ("tensorflow-probability", "tf-keras", "tensorflow-cpu"),
    "env": {"TF_USE_LEGACY_KERAS": "1"},
}
BAYESIAN_TORCH = {
    "script": "make_bayesian_torch_models.py",
    "modules": ("torch", "bayesian_torch"),
    "distributions": ("torch", "bayesian-torch"),
    "env": {},
}


def _version(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _generate(script, folder, extra_env):
    shutil.rmtree(folder, ignore_errors=True)
    env = dict(os.environ, **extra_env)
    env.pop("KERAS_BACKEND", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["CUDA_VISIBLE_DEVICES"] = ""
    result = subprocess.run(
        [sys.executable, str(script), str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(
            f"{script.name} failed (exit {result.returncode}):\n"
            f"{result.stderr[-4000:]}"
        )
    (folder / "complete").touch()


def peer_models(peer):
    """The folder of `peer`'s saved models; skips if the peer is absent."""
    missing = [
        name
        for name in peer["modules"]
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        pytest.skip(
            f"peer library not installed ({', '.join(missing)}); install "
            f"the test peers with `{INSTALL}`"
        )
    script = PEERS / peer["script"]
    versions = [_version(d) for d in peer["distributions"]] + [sys.version]
    key = hashlib.sha256(
        script.read_bytes() + repr(versions).encode()
    ).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"keras-bayes-{script.stem}-{key}"
    with open(f"{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "complete").exists():
            _generate(script, folder, peer["env"])
    return folder


def assert_load_refused(load, model, source, *fragments):
    """`load(model, source)` raises a `ValueError` holding every fragment,
    and every variable of `model` keeps its value."""
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.weights]
    with pytest.raises(ValueError) as error:
        load(model, source)
    message = str(error.value)
    assert "nothing was assigned" in message
    for fragment in fragments:
        assert fragment in message, message
    for variable, value in zip(model.weights, before):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(variable), value, err_msg=variable.path
        )
