"""Shared pytest set-up: one Keras backend per process (`KERAS_BACKEND`)."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

import keras_bayes as kb  # noqa: E402

BACKEND = keras.backend.backend()


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend: {BACKEND}"


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts in float32 with a fixed global seed."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(20261121)
    yield
    # No `clear_session()` here: its garbage collection costs about half a
    # second per test on torch, and nothing depends on fresh layer names.
    keras.config.set_dtype_policy("float32")


@pytest.fixture(params=["grouped", "per_member"])
def member_strategy(request):
    """Runs a test under each formulation of members with their own inputs
    (one grouped convolution, or one convolution per member)."""
    kb.config.set_member_strategy(request.param)
    yield request.param
    kb.config.set_member_strategy(None)
