"""What `to_bayesian` did: a record per layer converted or left, and the
one warning that names every layer left deterministic."""

import dataclasses
import warnings


def warn(converter, candidates):
    dropped = [record for record in converter.converted if record.dropped]
    if dropped:
        listed = "; ".join(
            f"'{record.original.name}': {record.dropped}" for record in dropped
        )
        warnings.warn(
            "to_bayesian dropped arguments that the Bayesian layers do not "
            "take (the KL term regularises the kernels instead): "
            f"{listed}.",
            stacklevel=3,
        )
    if converter.unconverted:
        refused = converter.unconverted
        total = sum(record.layer.count_params() for record in refused)
        lines = "\n".join(
            f"  '{record.layer.name}' ({type(record.layer).__name__}, "
            f"{record.layer.count_params():,} parameters): {record.reason}"
            for record in refused
        )
        count = len(converter.unconverted)
        warnings.warn(
            f"to_bayesian left {count} layer{'s' if count > 1 else ''} "
            f"holding {total:,} parameters deterministic, because it cannot "
            f"convert them:\n{lines}",
            stacklevel=3,
        )
    elif not candidates:
        warnings.warn(
            "to_bayesian: the model has no Conv or Dense layer to convert; "
            "the copy is deterministic.",
            stacklevel=3,
        )


@dataclasses.dataclass
class Converted:
    """A layer the conversion made Bayesian.

    Attributes:
        original: the Keras layer.
        layer: its Bayesian counterpart (without the `MembersInBatch`
            wrapper of a rank-1 layer).
        rule: the `table.Rule` used.
        dropped: config keys that the Bayesian layer has no place for.
        replaced: inside a subclassed block, the plain copy the Bayesian
            layer stands in for; None elsewhere.
    """

    original: object
    layer: object
    rule: object
    dropped: list
    replaced: object = None


@dataclasses.dataclass
class Unconverted:
    """A selected layer left deterministic, and why."""

    layer: object
    reason: str
