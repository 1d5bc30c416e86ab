"""Argument checks shared by every layer, with Keras-style messages.

Every error names the argument in backticks, says what was expected and ends
with `Received: arg=value`.
"""

import math
import numbers

import numpy as np

POSTERIOR_VALUES = ("sample", "mean")


def invalid(name, expected, value):
    return ValueError(
        f"Invalid value for argument `{name}`. {expected} "
        f"Received: {name}={value!r}"
    )


class _Summary:
    """A short stand-in for a large array in an error message."""

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        try:
            array = np.asarray(self.value, dtype="float64")
        except (TypeError, ValueError):
            return repr(self.value)
        if array.size <= 6:
            return repr(array.tolist())
        finite = array[np.isfinite(array)]
        low = f"{finite.min():.4g}" if finite.size else "nan"
        high = f"{finite.max():.4g}" if finite.size else "nan"
        bad = array.size - finite.size
        return (
            f"<array of shape {array.shape}, finite values in [{low}, "
            f"{high}], {bad} not finite>"
        )


def summary(value):
    """`value` for `invalid`: arrays of more than 6 entries shortened."""
    return _Summary(value)


def positive_int(value, name):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value <= 0
    ):
        raise invalid(name, "Expected a strictly positive integer.", value)
    return int(value)


def int_tuple(value, n, name, allow_zero=False):
    """Normalise an int or a sequence of `n` ints to an `n`-tuple."""
    lowest = 0 if allow_zero else 1
    kind = "non-negative" if allow_zero else "strictly positive"
    expected = f"Expected a {kind} integer or a tuple of {n} {kind} integers."
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        values = (int(value),) * n
    else:
        try:
            values = tuple(value)
        except TypeError:
            raise invalid(name, expected, value) from None
        if len(values) != n or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool)
            for v in values
        ):
            raise invalid(name, expected, value)
        values = tuple(int(v) for v in values)
    if any(v < lowest for v in values):
        raise invalid(name, expected, value)
    return values


def padding(value, allow_causal):
    allowed = ("valid", "same", "causal") if allow_causal else ("valid", "same")
    if not isinstance(value, str) or value.lower() not in allowed:
        options = ", ".join(f'"{a}"' for a in allowed)
        raise invalid("padding", f"Expected one of {options}.", value)
    return value.lower()


def data_format(value):
    import keras

    if value is None:
        return keras.config.image_data_format()
    if not isinstance(value, str) or value.lower() not in (
        "channels_last",
        "channels_first",
    ):
        raise invalid(
            "data_format",
            'Expected "channels_last", "channels_first" or None.',
            value,
        )
    return value.lower()


def _as_float(value):
    if isinstance(value, bool):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def number(value, name, lower=None, strict=False, upper=None):
    """A finite float within bounds, or a Keras-style error.

    Args:
        value: what the user passed.
        name: the argument's name.
        lower: the smallest allowed value (None: no bound).
        strict: whether `lower` itself is excluded.
        upper: the largest allowed value, included (None: no bound).
    """
    result = _as_float(value)
    ok = math.isfinite(result)
    if ok and lower is not None:
        ok = result > lower if strict else result >= lower
    if ok and upper is not None:
        ok = result <= upper
    if ok:
        return result
    if upper is not None:
        expected = f"Expected a number between {lower:g} and {upper:g}."
    elif lower == 0 and strict:
        expected = "Expected a finite, strictly positive number."
    elif lower == 0:
        expected = "Expected a finite, non-negative number."
    elif lower is not None:
        relation = "larger than" if strict else "at least"
        expected = f"Expected a finite number {relation} {lower:g}."
    else:
        expected = "Expected a finite number."
    raise invalid(name, expected, value)


def kl_weight(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise invalid(
            "kl_weight", "Expected a finite non-negative number.", value
        ) from None
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise invalid(
            "kl_weight", "Expected a finite non-negative number.", value
        )
    return number


def posterior_value(value):
    if not isinstance(value, str) or value.lower() not in POSTERIOR_VALUES:
        raise invalid("posterior_value", 'Expected "sample" or "mean".', value)
    return value.lower()


def seed(value):
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, numbers.Integral)
    ):
        raise invalid("seed", "Expected an integer or None.", value)
    return None if value is None else int(value)


def batch_shape(value):
    expected = "Expected a tuple of strictly positive integers (or ())."
    try:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            values = (value,)
        else:
            values = tuple(value)
    except TypeError:
        raise invalid("batch_shape", expected, value) from None
    if not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
        for v in values
    ):
        raise invalid("batch_shape", expected, value)
    return tuple(int(v) for v in values)
