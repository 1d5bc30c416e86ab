"""Bayesian convolutions of rank 1, 2 and 3."""

from keras_bayes._export import register
from keras_bayes.layers import variational
from keras_bayes.layers.linear_maps import ConvMap

_ARGS_DOC = """
    Args:
        filters: number of output channels.
        kernel_size: int or tuple of `rank` ints.
        strides: int or tuple of `rank` ints. Defaults to 1.
        padding: `"valid"` or `"same"` (case-insensitive); the 1D layers also
            take `"causal"`.
        data_format: `"channels_last"`, `"channels_first"`, or None for
            `keras.config.image_data_format()`.
        dilation_rate: int or tuple of `rank` ints. Defaults to 1.
        groups: number of channel groups; must divide `filters` and the
            input channels.
        activation: activation applied to the outputs.
        use_bias: whether the layer has a bias.
        kernel_posterior: a `kb.posteriors` object or its name. Defaults to
            `"mean_field_normal"`.
        kernel_prior: a `kb.priors` object, its name, or None (no kernel KL).
            Defaults to `"normal"`, N(0, 1).
        bias_posterior: `"deterministic"` (default) or
            `"mean_field_normal"`.
        bias_prior: as `kernel_prior`; None (default) means no bias KL.
        kl_weight: multiplies the KL added with `add_loss`. Use
            `1 / num_train_examples` for the per-example negative ELBO.
        posterior_value: `"sample"` (default) draws weights on every call,
            in training and inference; `"mean"` uses the posterior mean.
        seed: int seed of the layer's `keras.random.SeedGenerator`.
        activity_regularizer: as in Keras.
        batch_shape: shape of a batch of independent posteriors (members).
            Defaults to `()`, a single posterior. Every variable gets these
            leading axes and the KL sums over the members.

    Input shape:
        `(batch, *spatial, channels)` for channels_last,
        `(batch, channels, *spatial)` for channels_first. With a
        `batch_shape`, also `(batch, *batch_shape, *spatial, channels)`
        (one input per member; the former is fed to every member).

    Output shape:
        `(batch, *new_spatial, filters)` (channels_last), as the matching
        `keras.layers.ConvND`; with a `batch_shape`,
        `(batch, *batch_shape, *new_spatial, filters)`.
"""


def _map_attribute(name):
    return property(lambda self: getattr(self._linear_map, name))


class ConvArguments:
    """The convolution arguments of a layer, read from its `ConvMap`."""

    filters = _map_attribute("filters")
    kernel_size = _map_attribute("kernel_size")
    strides = _map_attribute("strides")
    padding = _map_attribute("padding")
    data_format = _map_attribute("data_format")
    dilation_rate = _map_attribute("dilation_rate")
    batch_shape = _map_attribute("batch_shape")


class VariationalConv(ConvArguments, variational.VariationalLayer):
    """Base of the Bayesian convolutions; subclasses fix `rank`."""

    rank = None

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
        activation=None,
        use_bias=True,
        kernel_posterior="mean_field_normal",
        kernel_prior="normal",
        bias_posterior="deterministic",
        bias_prior=None,
        kl_weight=1.0,
        posterior_value="sample",
        seed=None,
        activity_regularizer=None,
        batch_shape=(),
        **kwargs,
    ):
        super().__init__(
            activation=activation,
            use_bias=use_bias,
            kernel_posterior=kernel_posterior,
            kernel_prior=kernel_prior,
            bias_posterior=bias_posterior,
            bias_prior=bias_prior,
            kl_weight=kl_weight,
            posterior_value=posterior_value,
            seed=seed,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )
        self._linear_map = ConvMap(
            self.rank,
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            groups=groups,
            batch_shape=batch_shape,
        )

    groups = _map_attribute("groups")


def _conv_layer(rank, estimator, summary, args_doc=_ARGS_DOC):
    """A public conv class: a rank and an estimator on a base class."""

    def decorate(cls):
        cls.rank = rank
        cls.estimator = estimator
        cls.__doc__ = summary + "\n" + args_doc
        return register(cls)

    return decorate


_REPARAMETERIZATION_DOC = (
    "{rank}D convolution with a weight posterior, reparameterization "
    "estimator.\n\n    One kernel `W = kernel_loc + scale * eps` is drawn "
    "per call and shared by\n    the whole batch (Kingma & Welling 2014); the "
    "KL to the prior is added\n    with `add_loss`, times `kl_weight`.\n"
)
_FLIPOUT_DOC = (
    "{rank}D convolution with a weight posterior, Flipout estimator.\n\n"
    "    `y = conv(x, loc) + s_out * conv(x * s_in, scale * eps)` with "
    "Rademacher\n    signs per example and channel (Wen et al. 2018): each "
    "example gets an\n    effectively independent kernel draw for about twice "
    "the cost of one\n    convolution. The KL to the prior is added with "
    "`add_loss`.\n"
)


@_conv_layer(
    1, variational.REPARAMETERIZATION, _REPARAMETERIZATION_DOC.format(rank=1)
)
class Conv1DReparameterization(VariationalConv):
    pass


@_conv_layer(
    2, variational.REPARAMETERIZATION, _REPARAMETERIZATION_DOC.format(rank=2)
)
class Conv2DReparameterization(VariationalConv):
    pass


@_conv_layer(
    3, variational.REPARAMETERIZATION, _REPARAMETERIZATION_DOC.format(rank=3)
)
class Conv3DReparameterization(VariationalConv):
    pass


@_conv_layer(1, variational.FLIPOUT, _FLIPOUT_DOC.format(rank=1))
class Conv1DFlipout(VariationalConv):
    pass


@_conv_layer(2, variational.FLIPOUT, _FLIPOUT_DOC.format(rank=2))
class Conv2DFlipout(VariationalConv):
    pass


@_conv_layer(3, variational.FLIPOUT, _FLIPOUT_DOC.format(rank=3))
class Conv3DFlipout(VariationalConv):
    pass


# The names of `tfp.layers`, for users migrating from TensorFlow Probability.
Convolution1DReparameterization = Conv1DReparameterization
Convolution2DReparameterization = Conv2DReparameterization
Convolution3DReparameterization = Conv3DReparameterization
Convolution1DFlipout = Conv1DFlipout
Convolution2DFlipout = Conv2DFlipout
Convolution3DFlipout = Conv3DFlipout
