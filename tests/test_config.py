"""`kb.config`: the process-wide settings and their errors."""

import pytest

import keras_bayes as kb


@pytest.fixture(autouse=True)
def _restore_defaults():
    yield
    kb.config.set_member_strategy(None)
    kb.config.set_torch_channels_view(True)


@pytest.mark.parametrize("strategy", ["grouped", "per_member"])
def test_member_strategy_is_what_was_set(strategy):
    kb.config.set_member_strategy(strategy)
    assert kb.config.member_strategy() == strategy


def test_member_strategy_none_picks_a_known_one():
    kb.config.set_member_strategy(None)
    assert kb.config.member_strategy() in kb.config.MEMBER_STRATEGIES


def test_bad_member_strategy_changes_nothing():
    kb.config.set_member_strategy("grouped")
    message = (
        "Invalid value for argument `strategy`. Expected one of "
        "['grouped', 'per_member'] or None. Received: strategy='vmap'"
    )
    with pytest.raises(ValueError) as error:
        kb.config.set_member_strategy("vmap")
    assert str(error.value) == message
    assert kb.config.member_strategy() == "grouped"


def test_torch_channels_view():
    assert kb.config.torch_channels_view() is True
    kb.config.set_torch_channels_view(False)
    assert kb.config.torch_channels_view() is False
    with pytest.raises(ValueError, match="Received: enabled=1"):
        kb.config.set_torch_channels_view(1)
    assert kb.config.torch_channels_view() is False
