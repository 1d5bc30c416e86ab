"""Process-wide settings of keras-bayes, in the way `keras.config` works.

Each setting has a setter and a getter; nothing else writes them. They
choose between formulations that compute the same function, so they matter
for speed only (benchmarks and tests switch them to compare).

- `set_member_strategy`: how a layer with ensemble members (`batch_shape`)
  convolves inputs that carry one input per member.
- `set_torch_channels_view`: on PyTorch, convolve channels_last inputs
  through a channels-first view of the same memory.
"""

import functools

import keras

MEMBER_STRATEGIES = ("grouped", "per_member")

_settings = {"member_strategy": None, "torch_channels_view": True}


def set_member_strategy(strategy):
    """Choose how members that each have their own input are convolved.

    Args:
        strategy: `"grouped"` (the members become the groups of one grouped
            convolution), `"per_member"` (one convolution per member), or
            None to pick per backend and device: one convolution per member
            with XLA on a CPU, where grouped convolutions measured 20 to 30
            times slower (`docs/benchmarks.md`), grouped elsewhere.
    """
    if strategy is not None and strategy not in MEMBER_STRATEGIES:
        raise ValueError(
            "Invalid value for argument `strategy`. Expected one of "
            f"{list(MEMBER_STRATEGIES)} or None. Received: "
            f"strategy={strategy!r}"
        )
    _settings["member_strategy"] = strategy


def member_strategy():
    """The member strategy in use: `"grouped"` or `"per_member"`."""
    return _settings["member_strategy"] or _default_member_strategy()


@functools.cache
def _default_member_strategy():
    backend = keras.backend.backend()
    if backend == "torch":
        return "grouped"
    if backend not in ("tensorflow", "jax"):
        return "per_member"
    try:
        devices = keras.distribution.list_devices()
    except Exception:  # no device query on this backend: the safe choice
        return "per_member"
    on_cpu = not devices or devices[0].lower().startswith("cpu")
    return "per_member" if on_cpu else "grouped"


def set_torch_channels_view(enabled):
    """On PyTorch, convolve channels_last inputs through a channels-first
    view (the default, `True`) or through Keras' copying transposes.

    Args:
        enabled: a bool.
    """
    if not isinstance(enabled, bool):
        raise ValueError(
            "Invalid value for argument `enabled`. Expected True or False. "
            f"Received: enabled={enabled!r}"
        )
    _settings["torch_channels_view"] = enabled


def torch_channels_view():
    """Whether PyTorch convolutions use the channels-first view."""
    return _settings["torch_channels_view"]
