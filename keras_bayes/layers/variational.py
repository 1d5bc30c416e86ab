"""The variational machinery shared by every Bayesian layer.

`VariationalLayer` owns the posterior variables of a kernel and a bias, the
priors, the KL term and the three estimators. A concrete layer only picks a
linear map (`linear_maps.py`) and an estimator:

- reparameterization: one kernel draw `W = loc + scale * eps` per call,
  shared by the whole batch (Kingma & Welling 2014);
- Flipout: `y = f(x, loc) + s_out * f(x * s_in, scale * eps)` with Rademacher
  signs per example and channel (Wen et al. 2018);
- local reparameterization: `y ~ N(f(x, loc), f(x**2, scale**2))` drawn per
  example and unit (Kingma et al. 2015).

Two small non-trainable variables steer every call, so that changing them
takes effect in already-compiled `fit` / `predict` functions:
`kl_weight` (multiplies the KL) and `posterior_sample` (1: draw weights,
0: use the posterior mean).
"""

import math

import keras
from keras import ops

from keras_bayes import _validation, posteriors, priors
from keras_bayes.layers import linear_maps

REPARAMETERIZATION = "reparameterization"
FLIPOUT = "flipout"
LOCAL_REPARAMETERIZATION = "local_reparameterization"

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# Control variables that are not posterior parameters: a file saved before
# one of them existed still loads, keeping the value from the config.
_CONTROL_VARIABLES = ("kl_weight", "posterior_sample")


def _resolve(module, value, name):
    try:
        resolved = module.get(value)
    except ValueError:
        kind = module.__name__.rsplit(".", 1)[-1]
        raise _validation.invalid(
            name,
            f"Expected a `keras_bayes.{kind}` object or one of the names "
            f"{module.names()}.",
            value,
        ) from None
    return resolved


def _fresh(initializer):
    # An unseeded Keras initializer object repeats its values on every call;
    # a copy made from its config draws a new seed, so that layers (or the
    # kernel and bias) sharing one posterior object do not start equal.
    if isinstance(initializer, keras.initializers.Initializer):
        return type(initializer).from_config(initializer.get_config())
    return initializer


def _rademacher(shape, dtype, seed):
    bits = keras.random.randint(shape, 0, 2, dtype="int32", seed=seed)
    return ops.cast(bits, dtype) * 2 - 1


def _variance_floor(dtype):
    # Keeps sqrt differentiable where an input row is all zeros; far below
    # any variance that matters, but representable in half precision.
    return (
        1e-6
        if keras.backend.standardize_dtype(dtype)
        in (
            "float16",
            "bfloat16",
        )
        else 1e-12
    )


class VariationalLayer(keras.layers.Layer):
    """Base class of the Bayesian layers (not used directly).

    Subclasses set `estimator` and create `self._linear_map` in `__init__`
    (with the layer's `batch_shape`: a batch of independent posteriors is
    the map's business, so the estimators below never see it).
    """

    estimator = None

    def __init__(
        self,
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
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_posterior = _resolve(
            posteriors, kernel_posterior, "kernel_posterior"
        )
        self.kernel_prior = _resolve(priors, kernel_prior, "kernel_prior")
        self.bias_posterior = _resolve(
            posteriors, bias_posterior, "bias_posterior"
        )
        self.bias_prior = _resolve(priors, bias_prior, "bias_prior")
        for weight in ("kernel", "bias"):
            posterior = getattr(self, f"{weight}_posterior")
            prior = getattr(self, f"{weight}_prior")
            if prior is not None and not posterior.stochastic:
                raise _validation.invalid(
                    f"{weight}_prior",
                    f"A prior needs a stochastic `{weight}_posterior` (the "
                    "KL of a point estimate is undefined): use "
                    f"{weight}_posterior='mean_field_normal' or "
                    f"{weight}_prior=None.",
                    prior,
                )
        self._kl_weight = _validation.kl_weight(kl_weight)
        self._posterior_value = _validation.posterior_value(posterior_value)
        self.seed = _validation.seed(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self._linear_map = None

    # -- steering -------------------------------------------------------

    @property
    def kl_weight(self):
        """Multiplier of the KL added with `add_loss` (a Python float)."""
        if self.built:
            return float(ops.convert_to_numpy(self._kl_weight_variable))
        return self._kl_weight

    @kl_weight.setter
    def kl_weight(self, value):
        self._kl_weight = _validation.kl_weight(value)
        if self.built:
            self._kl_weight_variable.assign(self._kl_weight)

    @property
    def posterior_value(self):
        """`"sample"` (draw weights on every call) or `"mean"`."""
        if self.built:
            flag = float(ops.convert_to_numpy(self._posterior_sample_variable))
            return "sample" if flag > 0.5 else "mean"
        return self._posterior_value

    @posterior_value.setter
    def posterior_value(self, value):
        self._posterior_value = _validation.posterior_value(value)
        if self.built:
            self._posterior_sample_variable.assign(
                1.0 if self._posterior_value == "sample" else 0.0
            )

    # -- variables ------------------------------------------------------

    @property
    def batch_shape(self):
        """The shape of the batch of independent posteriors (`()`: one)."""
        return self._linear_map.batch_shape

    def _initializer(self, initializer):
        if self.batch_shape:
            return linear_maps.member_initializer(initializer, self.batch_shape)
        return _fresh(initializer)

    def _add_posterior_variables(self, weight, shape, posterior):
        loc = self.add_weight(
            name=f"{weight}_loc",
            shape=shape,
            initializer=self._initializer(posterior.loc_initializer),
            autocast=False,
        )
        setattr(self, f"{weight}_loc", loc)
        if posterior.stochastic:
            scale = self.add_weight(
                name=f"{weight}_untransformed_scale",
                shape=shape,
                initializer=self._initializer(
                    posterior.untransformed_scale_initializer
                ),
                autocast=False,
            )
            setattr(self, f"{weight}_untransformed_scale", scale)

    def build(self, input_shape):
        in_channels = self._linear_map.input_channels(input_shape, self.name)
        self._add_posterior_variables(
            "kernel",
            self._linear_map.kernel_shape(in_channels),
            self.kernel_posterior,
        )
        if self.use_bias:
            self._add_posterior_variables(
                "bias", self._linear_map.bias_shape(), self.bias_posterior
            )
        self._kl_weight_variable = self.add_weight(
            name="kl_weight",
            shape=(),
            initializer=keras.initializers.Constant(self._kl_weight),
            dtype="float32",
            trainable=False,
            autocast=False,
        )
        self._posterior_sample_variable = self.add_weight(
            name="posterior_sample",
            shape=(),
            initializer=keras.initializers.Constant(
                1.0 if self._posterior_value == "sample" else 0.0
            ),
            dtype="float32",
            trainable=False,
            autocast=False,
        )
        self.input_spec = self._linear_map.input_spec(input_shape, in_channels)

    def _posterior_parameters(self, weight):
        """`(loc, scale)` in float32; `scale` is None for a point estimate."""
        loc = ops.convert_to_tensor(getattr(self, f"{weight}_loc"))
        if not getattr(self, f"{weight}_posterior").stochastic:
            return loc, None
        untransformed = getattr(self, f"{weight}_untransformed_scale")
        return loc, posteriors.MeanFieldNormal.scale(untransformed)

    # -- forward --------------------------------------------------------

    def call(self, inputs):
        sample = ops.convert_to_tensor(self._posterior_sample_variable)
        loc, scale = self._posterior_parameters("kernel")
        outputs, eps = self._apply_kernel(inputs, loc, scale, sample)
        kl = self._kl(self.kernel_prior, loc, scale, eps)
        if self.use_bias:
            loc, scale = self._posterior_parameters("bias")
            eps = None
            bias = loc
            if scale is not None:
                eps = keras.random.normal(loc.shape, seed=self.seed_generator)
                bias = loc + sample * scale * eps
            outputs = self._linear_map.add_bias(
                outputs, ops.cast(bias, outputs.dtype)
            )
            kl = kl + self._kl(self.bias_prior, loc, scale, eps)
        self.add_loss(kl * self._kl_weight_variable)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _apply_kernel(self, inputs, loc, scale, sample):
        """The estimator: outputs before bias, and the kernel noise used.

        `sample` is 1.0 or 0.0; at 0.0 every estimator reduces exactly to the
        posterior mean, `f(inputs, loc)`.
        """
        linear_map = self._linear_map
        dtype = self.compute_dtype
        if scale is None:
            return linear_map(inputs, ops.cast(loc, dtype)), None
        seed = self.seed_generator
        if self.estimator == LOCAL_REPARAMETERIZATION:
            mean = linear_map(inputs, ops.cast(loc, dtype))
            variance = linear_map(
                ops.square(inputs), ops.cast(ops.square(scale), dtype)
            )
            noise = keras.random.normal(ops.shape(mean), dtype=dtype, seed=seed)
            stddev = ops.sqrt(variance + _variance_floor(dtype))
            return mean + ops.cast(sample, dtype) * stddev * noise, None
        eps = keras.random.normal(loc.shape, seed=seed)
        delta = sample * scale * eps
        if self.estimator == REPARAMETERIZATION:
            return linear_map(inputs, ops.cast(loc + delta, dtype)), eps
        sign_in_shape, sign_out_shape = linear_map.sign_shapes(inputs)
        sign_in = _rademacher(sign_in_shape, dtype, seed)
        sign_out = _rademacher(sign_out_shape, dtype, seed)
        # Signs differ per member: inputs shared by the members are
        # expanded to one copy per member here.
        mean = linear_map(inputs, ops.cast(loc, dtype))
        perturbation = linear_map(
            linear_map.expand_members(inputs) * sign_in, ops.cast(delta, dtype)
        )
        return mean + perturbation * sign_out, eps

    def _kl(self, prior, loc, scale, eps):
        """`KL(q || prior)` in float32 for one weight, 0 without a prior.

        Closed form where the prior has one; otherwise `log q(w) - log p(w)`
        at `w = loc + scale * eps`, the draw this call used when there is one.
        """
        if prior is None:
            return ops.zeros((), dtype="float32")
        closed_form = prior.kl_from_normal(loc, scale)
        if closed_form is not None:
            return closed_form
        if eps is None:
            eps = keras.random.normal(loc.shape, seed=self.seed_generator)
        weights = loc + scale * eps
        log_q = -0.5 * ops.square(eps) - ops.log(scale) - _HALF_LOG_2PI
        return ops.sum(log_q - prior.log_prob(weights))

    def compute_output_shape(self, input_shape):
        return self._linear_map.output_shape(input_shape, self.name)

    # -- saving ---------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(self._linear_map.get_config())
        config.update(
            {
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_posterior": posteriors.serialize(self.kernel_posterior),
                "kernel_prior": priors.serialize(self.kernel_prior),
                "bias_posterior": posteriors.serialize(self.bias_posterior),
                "bias_prior": priors.serialize(self.bias_prior),
                "kl_weight": self.kl_weight,
                "posterior_value": self.posterior_value,
                "seed": self.seed,
            }
        )
        return config

    def save_own_variables(self, store):
        # By name rather than position, so that adding a variable in a later
        # version does not shift every saved value; each with a checksum,
        # so that damaged bytes fail to load instead of loading silently.
        from keras_bayes import saving

        for variable in (
            self._trainable_variables + self._non_trainable_variables
        ):
            value = ops.convert_to_numpy(variable)
            store[variable.name] = value
            store[variable.name + saving.CHECKSUM_SUFFIX] = saving.checksum(
                value
            )

    def load_own_variables(self, store):
        from keras_bayes import saving

        own = self._trainable_variables + self._non_trainable_variables
        suffix = saving.CHECKSUM_SUFFIX
        stored = set(store.keys())
        keys = [key for key in stored if not key.endswith(suffix)]
        if keys and all(key.isdigit() for key in keys):
            # Keras' default positional layout, in the order of `own`, with
            # or without the control variables (older files lack them).
            posterior = [v for v in own if v.name not in _CONTROL_VARIABLES]
            layout = own if len(keys) == len(own) else posterior
            if sorted(keys, key=int) != [str(i) for i in range(len(layout))]:
                raise ValueError(
                    f"Layer '{self.name}' expected {len(own)} saved "
                    f"variables (or {len(posterior)} without "
                    f"{list(_CONTROL_VARIABLES)}), found {len(keys)}."
                )
            values = {layout[int(key)].name: store[key] for key in keys}
        else:
            values = {key: store[key] for key in keys}
            # Files saved before checksums existed have none: nothing to
            # verify, they load as before.
            for name, value in values.items():
                if name + suffix in stored:
                    saving.verify_checksum(
                        self.name, name, value, store[name + suffix]
                    )
        names = {variable.name for variable in own}
        missing = sorted(
            name
            for name in names - set(values)
            if name not in _CONTROL_VARIABLES
        )
        unexpected = sorted(set(values) - names)
        if missing or unexpected:
            raise ValueError(
                f"Layer '{self.name}' cannot load the saved weights: "
                f"missing {missing}, unexpected {unexpected}. The saved "
                "layer had different posteriors or `use_bias`."
            )
        for variable in own:
            if variable.name in values:
                variable.assign(values[variable.name])
        self._kl_weight = self.kl_weight
        self._posterior_value = self.posterior_value
