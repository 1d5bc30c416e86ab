"""Bad arguments and bad inputs raise clear `ValueError`s, Keras style.

A constructor error names the argument in backticks, says what was expected
and ends with `Received: arg=value`. Every case of the tables below runs on
every Bayesian conv and dense layer class it applies to.
"""

import math
import re

import keras
import numpy as np
import pytest

import keras_bayes as kb
from tests.layer_test import CONV_CLASSES, DENSE_CLASSES, TRANSPOSE_CLASSES

ALL_CONV_CLASSES = CONV_CLASSES + TRANSPOSE_CLASSES
ALL_CLASSES = ALL_CONV_CLASSES + DENSE_CLASSES

PRIOR_NAMES = "['normal', 'scale_mixture_normal', 'spike_and_slab']"
POSTERIOR_NAMES = "['deterministic', 'mean_field_normal']"
POSITIVE_INT = "Expected a strictly positive integer."
KL_WEIGHT = "Expected a finite non-negative number."
BATCH_SHAPE = "Expected a tuple of strictly positive integers (or ())."


def _ids(classes):
    return [cls.__name__ for cls in classes]


def _required(cls):
    """The required arguments of a layer class, valid."""
    if cls in DENSE_CLASSES:
        return {"units": 4}
    return {"filters": 4, "kernel_size": 3}


def _assert_invalid(call, name, expected, received, case=""):
    """`call()` raises the Keras-style error for argument `name`.

    `received` is the exact text after `Received: name=`, written out here
    rather than computed, so that the test pins the message users see.
    `case` labels the table row in a failure.
    """
    start = f"Invalid value for argument `{name}`. {expected}"
    end = f"Received: {name}={received}"
    try:
        call()
    except ValueError as error:
        message = str(error)
    else:
        pytest.fail(f"{case}: no ValueError for {name}={received}")
    assert message.startswith(start), (case, message)
    assert message.endswith(end), (case, message)


# -- arguments of every conv class, by rank ------------------------------


def _conv_cases(rank, transpose):
    """(argument, value, expected fragment, received text) per bad value."""
    positive = (
        f"Expected a strictly positive integer or a tuple of {rank} "
        "strictly positive integers."
    )
    long_tuple = (2,) * (rank + 1)
    long_text = repr(long_tuple)
    zero_entry = (1,) * (rank - 1) + (0,)
    cases = [
        ("filters", 0, POSITIVE_INT, "0"),
        ("filters", -2, POSITIVE_INT, "-2"),
        ("filters", 2.5, POSITIVE_INT, "2.5"),
        ("filters", True, POSITIVE_INT, "True"),
        ("kernel_size", 0, positive, "0"),
        ("kernel_size", -1, positive, "-1"),
        ("kernel_size", zero_entry, positive, repr(zero_entry)),
        ("kernel_size", long_tuple, positive, long_text),
        ("kernel_size", "3", positive, "'3'"),
        ("strides", 0, positive, "0"),
        ("strides", long_tuple, positive, long_text),
        ("dilation_rate", 0, positive, "0"),
        ("dilation_rate", long_tuple, positive, long_text),
        ("padding", "full", 'Expected one of "valid", "same"', "'full'"),
        ("padding", None, 'Expected one of "valid", "same"', "None"),
        (
            "data_format",
            "channels_middle",
            'Expected "channels_last", "channels_first" or None.',
            "'channels_middle'",
        ),
    ]
    if transpose:
        smaller = (
            "Expected every entry to be smaller than the matching stride "
            f"(strides={(1,) * rank})."
        )
        non_negative = (
            f"Expected a non-negative integer or a tuple of {rank} "
            "non-negative integers."
        )
        cases += [
            ("output_padding", 1, smaller, "1"),
            ("output_padding", -1, non_negative, "-1"),
            ("output_padding", long_tuple, non_negative, long_text),
        ]
    else:
        cases += [
            ("groups", 0, POSITIVE_INT, "0"),
            ("groups", 3, "Expected a divisor of `filters` (filters=4).", "3"),
        ]
    # "causal" is for the 1D (non-transposed) layers only.
    if rank == 1 and not transpose:
        options = 'Expected one of "valid", "same", "causal".'
        cases.append(("padding", "SAME_", options, "'SAME_'"))
    else:
        options = 'Expected one of "valid", "same".'
        cases.append(("padding", "causal", options, "'causal'"))
    return cases


# One test per class with a loop over the table rows, rather than one test
# per row: a few hundred tiny tests would spend most of their time in the
# per-test Keras session reset.
def _is_transpose(cls):
    return cls in TRANSPOSE_CLASSES


@pytest.mark.parametrize("cls", ALL_CONV_CLASSES, ids=_ids(ALL_CONV_CLASSES))
def test_conv_argument_errors(cls):
    rank, transpose = cls.rank, _is_transpose(cls)
    for name, value, expected, received in _conv_cases(rank, transpose):
        kwargs = {**_required(cls), name: value}
        _assert_invalid(
            lambda kwargs=kwargs: cls(**kwargs),
            name,
            expected,
            received,
            case=f"{cls.__name__}({name}={value!r})",
        )

    with pytest.raises(ValueError) as info:
        cls(4, 3, strides=2, dilation_rate=2)
    message = str(info.value)
    assert message.startswith(
        "Invalid value for arguments `strides` and `dilation_rate`."
    ), message
    assert message.endswith("Received: strides=2, dilation_rate=2"), message

    # The controls: the same arguments, valid, in other spellings.
    cls(4, 3, strides=2)
    cls(4, 3, dilation_rate=2)
    cls(4, 3, strides=(1,) * rank, dilation_rate=2)
    layer = cls(
        filters=4,
        kernel_size=(2,) * rank,
        strides=(1,) * rank,
        padding="SAME",
        data_format="Channels_First",
        dilation_rate=np.int64(1),
    )
    assert layer.padding == "same"
    assert layer.data_format == "channels_first"
    assert layer.kernel_size == (2,) * rank
    if transpose:
        layer = cls(4, 3, strides=2, output_padding=(1,) + (0,) * (rank - 1))
        assert layer.output_padding == (1,) + (0,) * (rank - 1)
        # Transposed convolutions have no `groups`: Keras rejects it.
        with pytest.raises(ValueError, match="Unrecognized keyword argument"):
            cls(4, 3, groups=2)
    else:
        assert cls(4, 3, groups=2).groups == 2
    if rank == 1 and not transpose:
        assert cls(4, 3, padding="Causal").padding == "causal"


# -- arguments of every dense class ----------------------------------------


def test_dense_units_errors():
    for cls in DENSE_CLASSES:
        for value, received in [
            (0, "0"),
            (-3, "-3"),
            (1.5, "1.5"),
            (None, "None"),
        ]:
            _assert_invalid(
                lambda cls=cls, value=value: cls(units=value),
                "units",
                POSITIVE_INT,
                received,
                case=f"{cls.__name__}(units={value!r})",
            )


# -- the Bayesian arguments, on every class --------------------------------

BAYESIAN_CASES = [
    ("kl_weight", -1.0, KL_WEIGHT, "-1.0"),
    ("kl_weight", -1e-9, KL_WEIGHT, "-1e-09"),
    ("kl_weight", math.inf, KL_WEIGHT, "inf"),
    ("kl_weight", -math.inf, KL_WEIGHT, "-inf"),
    ("kl_weight", math.nan, KL_WEIGHT, "nan"),
    ("kl_weight", "big", KL_WEIGHT, "'big'"),
    ("kl_weight", None, KL_WEIGHT, "None"),
    (
        "posterior_value",
        "median",
        'Expected "sample" or "mean".',
        "'median'",
    ),
    ("posterior_value", None, 'Expected "sample" or "mean".', "None"),
    ("seed", "abc", "Expected an integer or None.", "'abc'"),
    ("seed", 1.5, "Expected an integer or None.", "1.5"),
    ("seed", True, "Expected an integer or None.", "True"),
    ("batch_shape", 0, BATCH_SHAPE, "0"),
    ("batch_shape", (2, 0), BATCH_SHAPE, "(2, 0)"),
    ("batch_shape", (2.5,), BATCH_SHAPE, "(2.5,)"),
    ("batch_shape", "2", BATCH_SHAPE, "'2'"),
    ("batch_shape", None, BATCH_SHAPE, "None"),
    (
        "kernel_posterior",
        "gaussian",
        "Expected a `keras_bayes.posteriors` object or one of the names "
        + POSTERIOR_NAMES,
        "'gaussian'",
    ),
    (
        "bias_posterior",
        "nope",
        "Expected a `keras_bayes.posteriors` object or one of the names "
        + POSTERIOR_NAMES,
        "'nope'",
    ),
    (
        "kernel_prior",
        "laplace",
        "Expected a `keras_bayes.priors` object or one of the names "
        + PRIOR_NAMES,
        "'laplace'",
    ),
    (
        "bias_prior",
        "nope",
        "Expected a `keras_bayes.priors` object or one of the names "
        + PRIOR_NAMES,
        "'nope'",
    ),
]


def test_bayesian_argument_errors():
    for cls in ALL_CLASSES:
        for name, value, expected, received in BAYESIAN_CASES:
            kwargs = {**_required(cls), name: value}
            _assert_invalid(
                lambda cls=cls, kwargs=kwargs: cls(**kwargs),
                name,
                expected,
                received,
                case=f"{cls.__name__}({name}={value!r})",
            )


def test_prior_needs_a_stochastic_posterior():
    for cls in ALL_CLASSES:
        required = _required(cls)
        # Kernel: a deterministic posterior with the default N(0, 1) prior.
        _assert_invalid(
            lambda cls=cls, required=required: cls(
                **required, kernel_posterior="deterministic"
            ),
            "kernel_prior",
            "A prior needs a stochastic `kernel_posterior`",
            "Normal(loc=0.0, scale=1.0)",
            case=cls.__name__,
        )
        # Bias: the default deterministic posterior with a prior given.
        _assert_invalid(
            lambda cls=cls, required=required: cls(
                **required, bias_prior=kb.priors.SpikeAndSlab()
            ),
            "bias_prior",
            "A prior needs a stochastic `bias_posterior`",
            "SpikeAndSlab(mixture_weight=0.5, spike_scale=1.0, "
            "slab_scale=2000.0)",
            case=cls.__name__,
        )
        # The valid combinations of the same arguments.
        cls(**required, kernel_posterior="deterministic", kernel_prior=None)
        cls(**required, bias_posterior="mean_field_normal", bias_prior="normal")


def test_valid_bayesian_arguments_are_accepted():
    for cls in ALL_CLASSES:
        layer = cls(
            **_required(cls),
            kl_weight=0,
            posterior_value="MEAN",
            seed=np.int64(3),
            kernel_prior="Scale_Mixture_Normal",
        )
        assert layer.kl_weight == 0.0
        assert layer.posterior_value == "mean"
        assert layer.seed == 3
        assert isinstance(layer.kernel_prior, kb.priors.ScaleMixtureNormal)


# -- priors and posteriors -------------------------------------------------

POSITIVE_FINITE = "Expected a finite, strictly positive number."
MIXTURE_WEIGHT = "Expected a number strictly between 0 and 1."
INITIALIZER = "Expected a Keras initializer, its name or its config."

SMN = kb.priors.ScaleMixtureNormal
PRIOR_CASES = [
    (kb.priors.Normal, "scale", 0, POSITIVE_FINITE, "0"),
    (kb.priors.Normal, "scale", -1.0, POSITIVE_FINITE, "-1.0"),
    (kb.priors.Normal, "scale", math.inf, POSITIVE_FINITE, "inf"),
    (kb.priors.Normal, "scale", math.nan, POSITIVE_FINITE, "nan"),
    (kb.priors.Normal, "scale", "wide", POSITIVE_FINITE, "'wide'"),
    (kb.priors.Normal, "loc", math.inf, "Expected a finite number.", "inf"),
    (kb.priors.Normal, "loc", None, "Expected a finite number.", "None"),
    (
        SMN,
        "mixture_weight",
        1.5,
        MIXTURE_WEIGHT,
        "1.5",
    ),
    (SMN, "mixture_weight", 0, MIXTURE_WEIGHT, "0"),
    (
        SMN,
        "mixture_weight",
        1.0,
        MIXTURE_WEIGHT,
        "1.0",
    ),
    (
        SMN,
        "mixture_weight",
        math.nan,
        MIXTURE_WEIGHT,
        "nan",
    ),
    (SMN, "scale1", 0.0, POSITIVE_FINITE, "0.0"),
    (SMN, "scale2", -0.1, POSITIVE_FINITE, "-0.1"),
    (kb.priors.SpikeAndSlab, "mixture_weight", -0.5, MIXTURE_WEIGHT, "-0.5"),
    (kb.priors.SpikeAndSlab, "spike_scale", 0, POSITIVE_FINITE, "0"),
    (kb.priors.SpikeAndSlab, "slab_scale", math.inf, POSITIVE_FINITE, "inf"),
    (
        kb.posteriors.MeanFieldNormal,
        "loc_initializer",
        "nope",
        INITIALIZER,
        "'nope'",
    ),
    (
        kb.posteriors.MeanFieldNormal,
        "untransformed_scale_initializer",
        1.5,
        INITIALIZER,
        "1.5",
    ),
    (kb.posteriors.Deterministic, "initializer", "nope", INITIALIZER, "'nope'"),
]


def test_prior_and_posterior_argument_errors():
    for cls, name, value, expected, received in PRIOR_CASES:
        _assert_invalid(
            lambda cls=cls, name=name, value=value: cls(**{name: value}),
            name,
            expected,
            received,
            case=f"{cls.__name__}({name}={value!r})",
        )


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError) as info:
        kb.priors.get("nope")
    message = str(info.value)
    assert message.startswith("Unknown prior: 'nope'."), message
    assert message.endswith(f"one of the names {PRIOR_NAMES}."), message

    with pytest.raises(ValueError) as info:
        kb.posteriors.get("nope")
    message = str(info.value)
    assert message.startswith("Unknown posterior: 'nope'."), message
    assert message.endswith(f"one of the names {POSTERIOR_NAMES}."), message

    # Not a name at all: same error, not a TypeError or AttributeError.
    with pytest.raises(ValueError, match=re.escape("Unknown prior: 3.")):
        kb.priors.get(3)
    with pytest.raises(ValueError, match=re.escape("Unknown posterior: 3.")):
        kb.posteriors.get(3)
    # A posterior is not a prior, and the other way round.
    with pytest.raises(ValueError, match="Unknown prior"):
        kb.priors.get(kb.posteriors.MeanFieldNormal())
    with pytest.raises(ValueError, match="Unknown posterior"):
        kb.posteriors.get(kb.priors.Normal())


def test_a_posterior_as_a_prior_is_rejected_by_the_layer():
    posterior = kb.posteriors.Deterministic()
    with pytest.raises(ValueError) as info:
        kb.layers.DenseFlipout(2, kernel_prior=posterior)
    message = str(info.value)
    assert message.startswith(
        "Invalid value for argument `kernel_prior`. Expected a "
        "`keras_bayes.priors` object"
    ), message
    assert "Received: kernel_prior=Deterministic(initializer=" in message


def test_a_config_of_the_other_family_is_rejected_by_name():
    # A prior's config given as a posterior rebuilds a prior: the same
    # clear error as an unknown name, naming the argument, not a failure
    # at build time.
    config = kb.priors.serialize(kb.priors.Normal())
    with pytest.raises(ValueError) as info:
        kb.posteriors.get(config)
    assert str(info.value).startswith("Unknown posterior: {"), info.value
    with pytest.raises(ValueError) as info:
        kb.layers.DenseFlipout(2, kernel_posterior=config)
    message = str(info.value)
    assert message.startswith(
        "Invalid value for argument `kernel_posterior`. Expected a "
        f"`keras_bayes.posteriors` object or one of the names "
        f"{POSTERIOR_NAMES}."
    ), message
    assert "Received: kernel_posterior={" in message, message
    posterior = kb.posteriors.serialize(kb.posteriors.MeanFieldNormal())
    with pytest.raises(
        ValueError, match="Invalid value for argument `bias_prior`"
    ):
        kb.layers.DenseFlipout(2, bias_prior=posterior)


# -- inputs ----------------------------------------------------------------


def _input(shape):
    return np.zeros(shape, dtype="float32")


@pytest.mark.parametrize("cls", ALL_CONV_CLASSES, ids=_ids(ALL_CONV_CLASSES))
def test_conv_input_errors(cls):
    rank = cls.rank
    last = (2,) + (4,) * rank + (3,)
    first = (2, 3) + (4,) * rank

    # Wrong rank, one axis too few or too many: nothing is built.
    for shape in [(2,) + (5,) * rank, (2,) + (5,) * (rank + 2)]:
        layer = cls(4, 2)
        with pytest.raises(ValueError) as info:
            layer(_input(shape))
        message = str(info.value)
        assert f"expected ndim={rank + 2}" in message, message
        assert f"found ndim={len(shape)}" in message, message
        assert f"layer '{layer.name}'" in message, message
        assert not layer.built

    # `groups` must divide the input channels: eager and symbolic inputs,
    # and channels_first reads the channels from axis 1.
    if not _is_transpose(cls):
        message = (
            "must be divisible by `groups`. Received: groups=2, input "
            "channels=3"
        )
        with pytest.raises(ValueError, match=re.escape(message)):
            cls(4, 2, groups=2)(_input(last))
        with pytest.raises(ValueError, match=re.escape(message)):
            cls(4, 2, groups=2)(keras.Input(last[1:]))
        with pytest.raises(ValueError, match=re.escape(message)):
            cls(4, 2, groups=2, data_format="channels_first")(_input(first))

    # The channel axis must be known to make the kernel.
    with pytest.raises(ValueError, match="should be defined. Found None"):
        cls(4, 2)(keras.Input((4,) * rank + (None,)))

    # Another channel count after build: Keras' own InputSpec check. (A
    # symbolic call builds the layer without running a convolution.)
    layer = cls(4, 2)
    layer(keras.Input(last[1:]))
    with pytest.raises(ValueError) as info:
        layer(_input((2,) + (4,) * rank + (5,)))
    message = str(info.value)
    assert "is incompatible with the layer" in message, message
    assert "expected axis -1 of input shape to have value 3" in message
    layer = cls(4, 2, data_format="channels_first")
    layer(keras.Input(first[1:]))
    with pytest.raises(ValueError) as info:
        layer(_input((2, 5) + (4,) * rank))
    assert "expected axis 1 of input shape to have value 3" in str(info.value)


def test_dense_input_errors():
    for cls in DENSE_CLASSES:
        layer = cls(3)
        with pytest.raises(ValueError, match=re.escape("expected min_ndim=2")):
            layer(_input((5,)))
        assert not layer.built
        with pytest.raises(ValueError, match="should be defined. Found None"):
            cls(3)(keras.Input((None,)))
        layer(keras.Input((5,)))
        with pytest.raises(ValueError) as info:
            layer(_input((2, 4)))
        message = str(info.value)
        assert "expected axis -1 of input shape to have value 5" in message


# -- setters after build ---------------------------------------------------


def test_setters_after_build_validate():
    # The setters live in the shared base class: one class of each kind.
    for cls in [
        kb.layers.Conv2DFlipout,
        kb.layers.Conv1DTransposeReparameterization,
        kb.layers.DenseLocalReparameterization,
    ]:
        layer = cls(**_required(cls), kl_weight=0.5)
        if cls in DENSE_CLASSES:
            shape = (2, 3)
        else:
            shape = (2,) + (4,) * cls.rank + (2,)
        layer.build(shape)
        assert layer.built

        for value, received in [(-1, "-1"), (math.nan, "nan")]:

            def assign(layer=layer, value=value):
                layer.kl_weight = value

            _assert_invalid(
                assign, "kl_weight", KL_WEIGHT, received, case=cls.__name__
            )
        # A rejected value leaves the layer (and its variable) as it was.
        assert layer.kl_weight == 0.5

        def assign_mode(layer=layer):
            layer.posterior_value = "x"

        _assert_invalid(
            assign_mode,
            "posterior_value",
            'Expected "sample" or "mean".',
            "'x'",
            case=cls.__name__,
        )
        assert layer.posterior_value == "sample"

        model = keras.Sequential([layer])
        _assert_invalid(
            lambda model=model: kb.set_posterior_value(model, "posterior"),
            "posterior_value",
            'Expected "sample" or "mean".',
            "'posterior'",
            case=cls.__name__,
        )
        assert layer.posterior_value == "sample"
