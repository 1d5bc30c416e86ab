"""`KernelLayer`: a Bayesian layer with one kernel and a bias.

Conv, transposed conv, depthwise and dense layers are each a geometry
(their Keras arguments and map, `geometry.py`) and an estimator on this
base.
"""

from keras import ops

from keras_bayes import posteriors, priors
from keras_bayes._export import public_class
from keras_bayes.layers import estimators, variational


class KernelLayer(variational.VariationalLayer):
    """Base of the Bayesian layers with a kernel and a bias.

    Subclasses set the class attribute `estimator` (a name in
    `estimators.ESTIMATORS`), through `bayesian_layer`.
    """

    estimator = None

    def __init__(
        self,
        kernel_posterior="mean_field_normal",
        kernel_prior="normal",
        bias_posterior="deterministic",
        bias_prior=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.kernel_posterior = variational.resolve(
            posteriors, kernel_posterior, "kernel_posterior"
        )
        self.kernel_prior = variational.resolve(
            priors, kernel_prior, "kernel_prior"
        )
        self.bias_posterior = variational.resolve(
            posteriors, bias_posterior, "bias_posterior"
        )
        self.bias_prior = variational.resolve(priors, bias_prior, "bias_prior")
        variational.check_prior(
            "kernel", self.kernel_posterior, self.kernel_prior
        )
        variational.check_prior("bias", self.bias_posterior, self.bias_prior)
        self._estimator = estimators.get(self.estimator)

    def build_weights(self, input_shape):
        linear_map = self._map
        in_channels = linear_map.input_channels(input_shape)
        self.declare_weight(
            "kernel",
            linear_map.kernel_shape(in_channels),
            self.kernel_posterior,
            self.kernel_prior,
        )
        self.declare_bias(linear_map, in_channels)
        self.input_spec = linear_map.input_spec(input_shape, in_channels)

    def declare_bias(self, linear_map, in_channels):
        """Declare the bias of `linear_map`'s outputs, if the layer has one."""
        if self.use_bias:
            self.declare_weight(
                "bias",
                linear_map.bias_shape(in_channels),
                self.bias_posterior,
                self.bias_prior,
            )

    def compute_outputs(self, inputs, params, draws):
        outputs = estimators.apply(
            self._estimator, self._map, inputs, params["kernel"], draws
        )
        return self.add_bias(self._map, outputs, params, draws)

    def add_bias(self, linear_map, outputs, params, draws):
        """`outputs` plus the bias (its mean, or a draw), if the layer has
        one."""
        if not self.use_bias:
            return outputs
        bias = params["bias"]
        value = bias.loc if draws is None else draws.weights(bias)
        return linear_map.add_bias(outputs, ops.cast(value, outputs.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(
            variational.serialize_posteriors(self, ("kernel", "bias"))
        )
        return config


def bayesian_class(name, base, estimator, summary, args_doc, rank=None):
    """A public Bayesian class: `base` with an estimator (which must be in
    the table) and a rank, its docstring (`summary` may use `{rank}`),
    registered for serialization."""
    estimators.get(estimator)
    attributes = {"estimator": estimator}
    if rank is not None:
        attributes["rank"] = rank
    doc = summary.format(rank=rank) + "\n" + args_doc
    return public_class(name, base, doc, **attributes)
