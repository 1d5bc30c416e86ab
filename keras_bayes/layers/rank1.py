"""Rank-1 Bayesian layers (Dusenberry et al. 2020).

Every member `b` of the layer's `batch_shape` shares one point-estimate
kernel and has its own posterior over two vectors: `r_b` over the input
channels (`alpha`) and `s_b` over the output channels (`gamma`). Member
`b` computes `f(x * r_b, kernel) * s_b + bias_b`. In sample mode `r` and
`s` are drawn per example on every call, which decorrelates the examples
of a batch at the cost of one draw per example and channel; in mean mode
they are their posterior means and nothing is drawn.
"""

from keras import ops

from keras_bayes import posteriors, priors
from keras_bayes._export import public_class
from keras_bayes.layers import _docs, member_weights, variational
from keras_bayes.layers.geometry import (
    ConvGeometry,
    ConvTransposeGeometry,
    DenseGeometry,
)

# The factors' prior: centred on 1, as in the paper's experiments.
FACTOR_PRIOR = priors.Normal(loc=1.0, scale=0.1)

ARGS_DOC = """\
    Rank-1 Bayesian {kind} (Dusenberry et al. 2020).

    Member `b` (of `batch_shape`) computes `f(x * r_b, kernel) * s_b +
    bias_b` with one shared point-estimate `kernel` (Keras' layout, no
    member axes), `r_b ~ N(alpha_loc[b], alpha_scale[b])` over the input
    channels (`alpha_scale` from the scale variable of the posterior
    family) and `s_b ~ N(gamma_loc[b], gamma_scale[b])` over the output
    channels, drawn per example on every call in sample
    mode, their means in mean mode. The KL of `alpha` and `gamma` to their
    priors (closed form, summed over members) is added with `add_loss`,
    times `kl_weight`. Parameters beyond the plain layer: `batch_shape`
    times `in_channels + 2 * out_channels` (bias, alpha, gamma) plus the
    scales of alpha and gamma.

    Args:
        {keras_args}
        activation, use_bias: as in Keras.
        kernel_initializer, kernel_regularizer, kernel_constraint: of the
            shared kernel, as in Keras.
        bias_initializer, bias_regularizer, bias_constraint: of each
            member's bias.
        alpha_posterior, gamma_posterior: `kb.posteriors` families of the
            factors. Defaults to `kb.posteriors.FactorNormal()`: locs near
            1; `FactorNormal(random_sign_init=0.5)` is the paper's
            random-sign initialisation.
        alpha_prior, gamma_prior: `kb.priors` objects (or None: no KL
            term). Defaults to `kb.priors.Normal(1.0, 0.1)`.
{control_args}
    Input shape:
        As the matching `keras.layers` layer; with a `batch_shape`, also
        `(batch, *batch_shape, ...)`, one input per member (an input
        without member axes is fed to every member).

    Output shape:
        `(batch, *batch_shape, ...)`: one output per member.

    Example:

    >>> ensemble = kb.layers.{example}
    >>> ensemble(np.zeros({example_input})).shape
    {example_output}
"""


def _factors(params, shape, draws):
    """One factor vector per example (`shape`) drawn from its posterior in
    sample mode; the mean, shared by the examples, in mean mode and for a
    point-estimate (deterministic) factor."""
    if draws is None or params.scale is None:
        return ops.expand_dims(params.loc, 0)
    return params.loc + params.scale * draws.normal(shape)


class Rank1Layer(
    member_weights.PlainWeightArguments, variational.VariationalLayer
):
    """Base of the rank-1 layers; a geometry mixin supplies the map."""

    def __init__(
        self,
        alpha_posterior=None,
        gamma_posterior=None,
        alpha_prior=FACTOR_PRIOR,
        gamma_prior=FACTOR_PRIOR,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, posterior, prior in (
            ("alpha", alpha_posterior, alpha_prior),
            ("gamma", gamma_posterior, gamma_prior),
        ):
            if posterior is None:
                posterior = posteriors.FactorNormal()
            posterior = variational.resolve(
                posteriors, posterior, f"{name}_posterior"
            )
            prior = variational.resolve(priors, prior, f"{name}_prior")
            variational.check_prior(name, posterior, prior)
            setattr(self, f"{name}_posterior", posterior)
            setattr(self, f"{name}_prior", prior)

    def build_weights(self, input_shape):
        linear_map = self._map
        in_channels = linear_map.input_channels(input_shape)
        self.kernel = member_weights.add_member_weight(
            self, "kernel", linear_map.member_kernel_shape(in_channels), ()
        )
        members = self.batch_shape
        for name, channels in (
            ("alpha", in_channels),
            ("gamma", linear_map.output_channels(in_channels)),
        ):
            self.declare_weight(
                name,
                members + (channels,),
                getattr(self, f"{name}_posterior"),
                getattr(self, f"{name}_prior"),
            )
        self.bias = None
        if self.use_bias:
            self.bias = member_weights.add_member_weight(
                self, "bias", linear_map.bias_shape(in_channels), members
            )
        self.input_spec = linear_map.input_spec(input_shape, in_channels)

    def compute_outputs(self, inputs, params, draws):
        dtype = inputs.dtype
        in_shape, out_shape = self._map.factor_shapes(inputs)
        in_factors = _factors(params["alpha"], in_shape, draws)
        out_factors = _factors(params["gamma"], out_shape, draws)
        outputs = self._map.modulate(
            inputs,
            ops.cast(self.kernel, dtype),
            ops.cast(in_factors, dtype),
            ops.cast(out_factors, dtype),
        )
        if self.use_bias:
            outputs = self._map.add_bias(outputs, ops.cast(self.bias, dtype))
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            variational.serialize_posteriors(self, ("alpha", "gamma"))
        )
        return config


def _rank1(name, base, rank, kind, keras_args, example, shapes):
    """A public rank-1 class; `shapes` is `(example input, output)`."""
    doc = ARGS_DOC.format(
        kind=kind,
        keras_args=keras_args,
        control_args=_docs.CONTROL_ARGS,
        example=example,
        example_input=shapes[0],
        example_output=shapes[1],
    )
    return public_class(name, base, doc, rank=rank)


_CONV_ARGS = (
    "filters, kernel_size, strides, padding, data_format, dilation_rate,\n"
    "            groups: as in `keras.layers.ConvND`."
)
_TRANSPOSE_ARGS = (
    "filters, kernel_size, strides, padding, output_padding,\n"
    "            data_format, dilation_rate: as in "
    "`keras.layers.ConvNDTranspose`."
)


class ConvRank1(ConvGeometry, Rank1Layer):
    """Base of `Conv1D/2D/3DRank1`."""


class ConvTransposeRank1(ConvTransposeGeometry, Rank1Layer):
    """Base of `Conv1D/2D/3DTransposeRank1`."""


class DenseRank1Base(DenseGeometry, Rank1Layer):
    """Base of `DenseRank1`."""


Conv1DRank1 = _rank1(
    "Conv1DRank1",
    ConvRank1,
    1,
    "1D convolution",
    _CONV_ARGS,
    "Conv1DRank1(8, 3, batch_shape=(4,))",
    ("(2, 10, 3)", "(2, 4, 8, 8)"),
)
Conv2DRank1 = _rank1(
    "Conv2DRank1",
    ConvRank1,
    2,
    "2D convolution",
    _CONV_ARGS,
    "Conv2DRank1(8, 3, batch_shape=(4,))",
    ("(2, 10, 10, 3)", "(2, 4, 8, 8, 8)"),
)
Conv3DRank1 = _rank1(
    "Conv3DRank1",
    ConvRank1,
    3,
    "3D convolution",
    _CONV_ARGS,
    "Conv3DRank1(8, 3, batch_shape=(4,))",
    ("(2, 6, 6, 6, 3)", "(2, 4, 4, 4, 4, 8)"),
)
Conv1DTransposeRank1 = _rank1(
    "Conv1DTransposeRank1",
    ConvTransposeRank1,
    1,
    "1D transposed convolution",
    _TRANSPOSE_ARGS,
    "Conv1DTransposeRank1(8, 3, batch_shape=(4,))",
    ("(2, 10, 3)", "(2, 4, 12, 8)"),
)
Conv2DTransposeRank1 = _rank1(
    "Conv2DTransposeRank1",
    ConvTransposeRank1,
    2,
    "2D transposed convolution",
    _TRANSPOSE_ARGS,
    "Conv2DTransposeRank1(8, 3, batch_shape=(4,))",
    ("(2, 10, 10, 3)", "(2, 4, 12, 12, 8)"),
)
Conv3DTransposeRank1 = _rank1(
    "Conv3DTransposeRank1",
    ConvTransposeRank1,
    3,
    "3D transposed convolution",
    _TRANSPOSE_ARGS,
    "Conv3DTransposeRank1(8, 3, batch_shape=(4,))",
    ("(2, 6, 6, 6, 3)", "(2, 4, 8, 8, 8, 8)"),
)
DenseRank1 = _rank1(
    "DenseRank1",
    DenseRank1Base,
    None,
    "dense layer",
    "units: as in `keras.layers.Dense`.",
    "DenseRank1(10, batch_shape=(4,))",
    ("(2, 32)", "(2, 4, 10)"),
)
