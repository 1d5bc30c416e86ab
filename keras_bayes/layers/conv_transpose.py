"""Bayesian transposed convolutions of rank 1, 2 and 3."""

from keras_bayes.layers import variational
from keras_bayes.layers.conv import ConvArguments, _conv_layer, _map_attribute
from keras_bayes.layers.linear_maps import ConvMap

_ARGS_DOC = """
    Args:
        filters: number of output channels.
        kernel_size: int or tuple of `rank` ints.
        strides: int or tuple of `rank` ints. Defaults to 1.
        padding: `"valid"` or `"same"` (case-insensitive).
        output_padding: None, or an int or tuple of `rank` ints, each
            smaller than the matching stride: extra rows added at the end
            of each spatial axis. None lets Keras infer the output size.
        data_format: `"channels_last"`, `"channels_first"`, or None for
            `keras.config.image_data_format()`.
        dilation_rate: int or tuple of `rank` ints. Defaults to 1.
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
            Defaults to `()`, a single posterior.

    Kernel layout is Keras': `kernel_size + (filters, in_channels)`, with
    `batch_shape` in front.

    Input shape:
        `(batch, *spatial, channels)` for channels_last,
        `(batch, channels, *spatial)` for channels_first. With a
        `batch_shape`, also `(batch, *batch_shape, *spatial, channels)`
        (one input per member; the former is fed to every member).

    Output shape:
        As the matching `keras.layers.ConvNDTranspose`, with
        `batch_shape` after the batch axis.

    Example:

    >>> decoder = keras.Sequential([
    ...     keras.Input((7, 7, 16)),
    ...     kb.layers.Conv2DTransposeFlipout(8, 3, strides=2, padding="same"),
    ... ])
    >>> decoder(np.zeros((2, 7, 7, 16))).shape
    (2, 14, 14, 8)
"""


class VariationalConvTranspose(ConvArguments, variational.VariationalLayer):
    """Base of the Bayesian transposed convolutions; subclasses fix `rank`."""

    rank = None

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        output_padding=None,
        data_format=None,
        dilation_rate=1,
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
            transpose=True,
            output_padding=output_padding,
            batch_shape=batch_shape,
        )

    output_padding = _map_attribute("output_padding")


_REPARAMETERIZATION_DOC = (
    "{rank}D transposed convolution with a weight posterior, "
    "reparameterization\n    estimator.\n\n    One kernel `W = kernel_loc + "
    "scale * eps` is drawn per call and shared by\n    the whole batch; the "
    "KL to the prior is added with `add_loss`, times\n    `kl_weight`.\n"
)
_FLIPOUT_DOC = (
    "{rank}D transposed convolution with a weight posterior, Flipout "
    "estimator.\n\n    `y = conv_transpose(x, loc) + s_out * "
    "conv_transpose(x * s_in, scale * eps)`\n    with Rademacher signs per "
    "example and channel: effectively independent\n    kernel draws per "
    "example. The KL to the prior is added with `add_loss`.\n"
)


def _transpose_layer(rank, estimator, summary):
    return _conv_layer(
        rank, estimator, summary.format(rank=rank), args_doc=_ARGS_DOC
    )


@_transpose_layer(1, variational.REPARAMETERIZATION, _REPARAMETERIZATION_DOC)
class Conv1DTransposeReparameterization(VariationalConvTranspose):
    pass


@_transpose_layer(2, variational.REPARAMETERIZATION, _REPARAMETERIZATION_DOC)
class Conv2DTransposeReparameterization(VariationalConvTranspose):
    pass


@_transpose_layer(3, variational.REPARAMETERIZATION, _REPARAMETERIZATION_DOC)
class Conv3DTransposeReparameterization(VariationalConvTranspose):
    pass


@_transpose_layer(1, variational.FLIPOUT, _FLIPOUT_DOC)
class Conv1DTransposeFlipout(VariationalConvTranspose):
    pass


@_transpose_layer(2, variational.FLIPOUT, _FLIPOUT_DOC)
class Conv2DTransposeFlipout(VariationalConvTranspose):
    pass


@_transpose_layer(3, variational.FLIPOUT, _FLIPOUT_DOC)
class Conv3DTransposeFlipout(VariationalConvTranspose):
    pass
