"""Skip markers for behaviour that differs between backends.

Usage: `@skip_on("torch", reason="...")` on a test or a parametrize case.
The reason is shown in the per-backend report.
"""

import keras
import pytest

BACKEND = keras.backend.backend()


def skip_on(*backends, reason):
    return pytest.mark.skipif(
        BACKEND in backends, reason=f"skipped on {BACKEND}: {reason}"
    )


def only_on(*backends, reason):
    return pytest.mark.skipif(
        BACKEND not in backends, reason=f"skipped on {BACKEND}: {reason}"
    )
