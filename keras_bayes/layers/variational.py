"""`VariationalLayer`: the machinery shared by every Bayesian layer.

A Bayesian layer declares, in `build`, the weights that carry a posterior
(`declare_weight`: a name, a shape, a posterior family and a prior). The
base layer creates their variables through the family, draws them, scores
them (the KL), saves and loads them by name with checksums, and reports
them for export and conversion. A layer kind only says how its outputs
come from its inputs and its weights (`compute_outputs`).

The path of one call: `modes.branch` picks sample or mean mode from the
flag (the one place that decides) -> sample mode: one `estimators.Draws`
holds every random number of the call, `compute_outputs` runs with the
posterior parameters and the draws, and the KL scores the same draws;
mean mode: `compute_outputs` at the posterior means, drawing nothing, and
the KL in closed form (or by quadrature) -> the KL of every weight, times
`kl_weight`, added with `add_loss` (and noted for `fit`'s logs,
`kl_logging.py`) -> the activation.

Two small non-trainable variables steer every call, so that changing them
takes effect in already-compiled `fit` / `predict` functions: `kl_weight`
(multiplies the KL) and `posterior_sample` (1: draw weights, 0: use the
posterior mean). How the flag is read in eager and traced calls, and why
JAX differentiates a branch-free form of the call, is in `modes.py`; the
`training` argument changes nothing but `fit`'s KL log.
"""

import keras
from keras import ops

from keras_bayes import _validation, posteriors, priors, saving
from keras_bayes.layers import estimators, kl_logging, member_weights, modes

# Control variables that are not posterior parameters: a file saved before
# one of them existed still loads, keeping the value from the config.
CONTROL_VARIABLES = ("kl_weight", "posterior_sample")


def resolve(module, value, name):
    """A posterior or prior from an object, name or config; errors name
    the argument."""
    try:
        return module.get(value)
    except ValueError:
        kind = module.__name__.rsplit(".", 1)[-1]
        raise _validation.invalid(
            name,
            f"Expected a `keras_bayes.{kind}` object or one of the names "
            f"{module.names()}.",
            value,
        ) from None


def check_prior(weight, posterior, prior):
    """A prior needs a stochastic posterior: the KL of a point is undefined."""
    if prior is not None and not posterior.stochastic:
        raise _validation.invalid(
            f"{weight}_prior",
            f"A prior needs a stochastic `{weight}_posterior` (the KL of a "
            f"point estimate is undefined): use {weight}_posterior="
            f"'mean_field_normal' or {weight}_prior=None.",
            prior,
        )


class PosteriorWeight:
    """A weight that carries a posterior, as a layer declared it.

    Attributes:
        name: e.g. `"kernel"`; its variables are `<name>_loc`, ...
        shape: the variables' shape (member axes first).
        posterior: a `kb.posteriors` family.
        prior: a `kb.priors` object, or None (no KL term).
        variables: `{suffix: variable}`, made by the family.
    """

    def __init__(self, name, shape, posterior, prior, variables):
        self.name = name
        self.shape = tuple(shape)
        self.posterior = posterior
        self.prior = prior
        self.variables = variables

    def parameters(self):
        return self.posterior.parameters(self.name, self.variables)

    @property
    def needs_draw_for_kl(self):
        """Whether the KL is a Monte Carlo estimate at a posterior draw."""
        return self.prior is not None and not self.prior.closed_form_kl

    def moments(self):
        """`(loc, scale)` as NumPy arrays (`scale` None for a point)."""
        return self.posterior.moments(self.variables)

    def mean(self):
        """The posterior mean as a NumPy array."""
        return self.moments()[0]

    def assign(self, loc, scale=None):
        """Set the posterior to mean `loc` and standard deviation `scale`
        (None for a point estimate), through the family.

        Every value is checked before any variable changes: a wrong shape
        is a `ValueError` and leaves the weight as it was.
        """
        self._assign(self.posterior.values(loc, scale))

    def assign_point(self, weights, moped_delta):
        """Centre the posterior on trained `weights` (MOPED scale)."""
        self._assign(self.posterior.values_from_point(weights, moped_delta))

    def _assign(self, values):
        for suffix, value in values.items():
            variable = self.variables[suffix]
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(
                    f"Cannot set weight '{self.name}' from values of shape "
                    f"{tuple(value.shape)}: expected {tuple(variable.shape)}."
                )
        for suffix, value in values.items():
            self.variables[suffix].assign(value)


class VariationalLayer(keras.layers.Layer):
    """Base class of the Bayesian layers (not used directly).

    Subclasses (with a geometry mixin, `geometry.py`, that sets `_map`,
    `activation`, `batch_shape` and the output shape) declare their
    weights in `build_weights(input_shape)` and compute outputs in
    `compute_outputs(inputs, params, draws)`, where `params` maps weight
    names to `kb.posteriors.Parameters` and `draws` is an
    `estimators.Draws` in sample mode, None in mean mode.
    """

    def __init__(
        self,
        kl_weight=1.0,
        posterior_value="sample",
        seed=None,
        activity_regularizer=None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self._kl_weight = _validation.kl_weight(kl_weight)
        self._posterior_value = _validation.posterior_value(posterior_value)
        self.seed = _validation.seed(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.posterior_weights = []
        self._kl_cache = modes.KLCache()

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

    # -- weights --------------------------------------------------------

    def declare_weight(self, name, shape, posterior, prior):
        """Declare a weight with a posterior; returns its `PosteriorWeight`.

        The family makes the variables (`<name>_loc`, ...), each member
        drawn on its own (`batch_shape`).
        """
        batch_shape = self.batch_shape

        def wrap(initializer):
            return member_weights.member_initializer(initializer, batch_shape)

        variables = posterior.create(self, name, shape, wrap)
        weight = PosteriorWeight(name, shape, posterior, prior, variables)
        self.posterior_weights.append(weight)
        return weight

    def build(self, input_shape):
        self.build_weights(input_shape)
        kl_logging.attach(self)
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

    def posterior_weight(self, name):
        """The declared `PosteriorWeight` called `name` (e.g. `"kernel"`)."""
        for weight in self.posterior_weights:
            if weight.name == name:
                return weight
        raise _validation.invalid(
            "name",
            f"Layer '{self.name}' has the posterior weights "
            f"{[w.name for w in self.posterior_weights]}.",
            name,
        )

    def set_from_point(self, weights, moped_delta):
        """Centre every declared posterior on trained point estimates.

        Args:
            weights: `{weight name: array}` for every declared weight
                (e.g. `{"kernel": w, "bias": b}`); plain weights of the
                layer are matched by variable name.
            moped_delta: the relative posterior scale of MOPED.
        """
        for weight in self.posterior_weights:
            weight.assign_point(weights[weight.name], moped_delta)

    # -- forward --------------------------------------------------------

    def call(self, inputs, training=None):
        # One place picks sample or mean mode (`modes.branch`); in sample
        # mode every random number of the call comes from one `Draws`.
        flag = self._posterior_sample_variable
        seed = self.seed_generator
        if keras.backend.backend() == "jax" and modes.known_bool(flag) is None:
            seed = self.seed_generator.next()
        result = modes.branch(
            flag,
            self._sampled,
            self._at_mean,
            self._scaled,
            lambda: self.variables,
            inputs,
            seed,
        )
        if result is None:
            outputs = self.compute_outputs(inputs, self._means(), None)
            weighted = self._eager_mean_kl()
        else:
            outputs, kl = result
            weighted = kl * self._kl_weight_variable
        self.add_loss(weighted)
        kl_logging.record(self, weighted, training)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _posterior_parameters(self):
        return {w.name: w.parameters() for w in self.posterior_weights}

    def _means(self):
        """The posterior means only: mean mode needs no scale."""
        return {
            w.name: posteriors.Parameters(
                w.name, ops.convert_to_tensor(w.variables["loc"]), None
            )
            for w in self.posterior_weights
        }

    def _kl(self, params, draws):
        """The unweighted KL of every declared weight, in float32: a Monte
        Carlo KL at the call's draw (`draws`), or, in mean mode (None),
        without drawing."""
        kl = ops.zeros((), dtype="float32")
        for weight in self.posterior_weights:
            noise = None
            if draws is not None and weight.needs_draw_for_kl:
                noise = draws.noise(params[weight.name])
            kl = kl + priors.kl_divergence(
                weight.prior, params[weight.name], noise
            )
        return kl

    def _sampled(self, inputs, seed):
        draws = estimators.Draws(seed)
        params = self._posterior_parameters()
        outputs = self.compute_outputs(inputs, params, draws)
        return outputs, self._kl(params, draws)

    def _at_mean(self, inputs):
        # The KL is an output of the branch: where nothing reads it (a
        # compiled `predict`), the compiler drops it with its scales.
        outputs = self.compute_outputs(inputs, self._means(), None)
        return outputs, self._kl(self._posterior_parameters(), None)

    def _scaled(self, inputs, seed, flag):
        """Sample mode with every scale times `flag` (0 or 1): the outputs
        of either mode without a branch, and the KL of the mode `flag`
        picks (they differ only for a Monte Carlo KL)."""
        draws = estimators.Draws(seed)
        params = self._posterior_parameters()
        outputs = self.compute_outputs(
            inputs, modes.scaled_by(params, flag), draws
        )
        kl = self._kl(params, draws)
        if any(w.needs_draw_for_kl for w in self.posterior_weights):
            kl = ops.where(flag > 0.5, kl, self._kl(params, None))
        return outputs, kl

    def _eager_mean_kl(self):
        """The weighted KL in eager mean mode, reused while no variable (nor
        `kl_weight`) changed.

        Serving at the mean calls the layer again and again with the same
        weights; the KL of unchanged variables (closed form, or the mean
        mode's quadrature) is the same tensor, so it is computed once
        (never where a gradient may flow through it).
        """
        variables = [
            v for w in self.posterior_weights for v in w.variables.values()
        ]
        variables.append(self._kl_weight_variable)
        key, values = modes.unchanged_key(variables)
        cache = self._kl_cache
        if key is not None and cache.key == key:
            return cache.kl
        kl = self._kl(self._posterior_parameters(), None)
        kl = kl * self._kl_weight_variable
        if key is not None:
            cache.key, cache.kl, cache.values = key, kl, values
        return kl

    # -- saving ---------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kl_weight": self.kl_weight,
                "posterior_value": self.posterior_value,
                "seed": self.seed,
            }
        )
        return config

    def save_own_variables(self, store):
        saving.save_variables(self, store)

    def load_own_variables(self, store):
        saving.load_variables(self, store, optional=CONTROL_VARIABLES)
        self._kl_weight = self.kl_weight
        self._posterior_value = self.posterior_value


def serialize_posteriors(layer, names):
    """Config entries `<name>_posterior` / `<name>_prior` of a layer."""
    config = {}
    for name in names:
        config[f"{name}_posterior"] = posteriors.serialize(
            getattr(layer, f"{name}_posterior")
        )
        config[f"{name}_prior"] = priors.serialize(
            getattr(layer, f"{name}_prior")
        )
    return config
