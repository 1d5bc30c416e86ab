"""Priors over weights.

A prior contributes to the KL term of a layer. `Normal` has a closed-form KL
against a mean-field normal posterior; the mixtures are estimated in sample
mode with one Monte Carlo sample, `log q(w) - log p(w)` at the posterior
draw `w` of the call, and in mean mode (which draws nothing) as
`E_q[log q] - E_q[log p]`, the second term by 32-point Gauss-Hermite
quadrature per weight.
All arithmetic here runs in float32 whatever the layer's compute dtype.
"""

import abc
import math

import numpy as np
from keras import ops

from keras_bayes import _registry, _validation
from keras_bayes._export import register

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def normal_log_prob(x, loc, scale):
    """Elementwise log density of `N(loc, scale)` at `x`."""
    z = (x - loc) / scale
    return -0.5 * ops.square(z) - ops.log(scale) - _HALF_LOG_2PI


def normal_kl_sum(loc, scale, prior_loc, prior_scale):
    """`KL(N(loc, scale) || N(prior_loc, prior_scale))` summed over weights.

    Per weight, `log(s0 / s) + (s^2 + (m - m0)^2) / (2 s0^2) - 1/2`. The
    forward pass is two dot products and one sum of logs; the gradient is
    written out (`(m - m0) / s0^2` and `s / s0^2 - 1 / s`) rather than
    traced through the elementwise formula, which halves the number of
    full-size passes over the weights where each operation runs on its own
    (PyTorch) and changes nothing where the compiler fuses them.
    """
    half_inverse_variance = 0.5 / prior_scale**2
    constant = math.prod(loc.shape) * (math.log(prior_scale) - 0.5)
    # On TensorFlow, Keras hands a variable over as a `tf.Variable`, which a
    # custom gradient would take for a captured variable; a cast to its own
    # dtype reads it into a tensor (and costs nothing on any backend).
    loc = ops.cast(loc, "float32")
    scale = ops.cast(scale, "float32")

    @ops.custom_gradient
    def kl(loc, scale):
        centred = loc if prior_loc == 0.0 else loc - prior_loc
        flat_loc = ops.reshape(centred, (-1,))
        flat_scale = ops.reshape(scale, (-1,))
        squares = ops.dot(flat_loc, flat_loc) + ops.dot(flat_scale, flat_scale)
        value = (
            half_inverse_variance * squares - ops.sum(ops.log(scale)) + constant
        )

        # TensorFlow and JAX pass the upstream gradient positionally,
        # PyTorch by keyword after the inputs.
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            factor = (2.0 * half_inverse_variance) * upstream
            return centred * factor, scale * factor - upstream / scale

        return value, grad

    return kl(loc, scale)


# Gauss-Hermite nodes and weights for `E[f(Z)]`, `Z ~ N(0, 1)`: the mean
# mode's KL of a prior without a closed form (draws nothing).
_QUADRATURE_POINTS = 32
_NODES, _WEIGHTS = np.polynomial.hermite.hermgauss(_QUADRATURE_POINTS)
_NODES = [float(x) for x in np.sqrt(2.0) * _NODES]
_WEIGHTS = [float(w) for w in _WEIGHTS / np.sqrt(np.pi)]


def expected_log_prob(prior, loc, scale):
    """`E_q[log p(w)]` summed over weights, `q = N(loc, scale)`, by
    32-point Gauss-Hermite quadrature per weight (deterministic)."""
    total = ops.zeros((), dtype="float32")
    for node, weight in zip(_NODES, _WEIGHTS):
        total = total + weight * ops.sum(prior.log_prob(loc + scale * node))
    return total


def kl_divergence(prior, params, noise=None):
    """`KL(q || prior)` of one weight in float32; 0 without a prior.

    Closed form where the prior has one. Otherwise, with `noise`, the
    single-sample Monte Carlo estimate `log q(w) - log p(w)` at `w = loc +
    scale * noise` (sample mode: the draw the outputs used); without it
    (mean mode, which draws nothing), `E_q[log q] - E_q[log p]` with the
    second term by Gauss-Hermite quadrature.

    Args:
        prior: a `Prior` or None.
        params: the weight's `kb.posteriors.Parameters` (a normal
            posterior; a prior on a point estimate is refused earlier).
        noise: the standard normal draw behind `w`, or None.
    """
    if prior is None:
        return ops.zeros((), dtype="float32")
    closed_form = prior.kl_from_normal(params.loc, params.scale)
    if closed_form is not None:
        return closed_form
    if noise is None:
        # E_q[log q] = -1/2 - log(scale) - log(2 pi) / 2 per weight.
        count = math.prod(params.loc.shape)
        neg_entropy = -ops.sum(ops.log(params.scale)) - count * (
            0.5 + _HALF_LOG_2PI
        )
        return neg_entropy - expected_log_prob(prior, params.loc, params.scale)
    weights = params.loc + params.scale * noise
    log_q = -0.5 * ops.square(noise) - ops.log(params.scale) - _HALF_LOG_2PI
    return ops.sum(log_q - prior.log_prob(weights))


class Prior(_registry.ConfigObject, abc.ABC):
    """Base class of the weight priors.

    `closed_form_kl` says whether `kl_from_normal` has a closed form;
    without one, the KL is a Monte Carlo estimate at a posterior draw.
    """

    closed_form_kl = False

    @abc.abstractmethod
    def log_prob(self, weights):
        """Elementwise log density at `weights` (float32 tensor)."""

    def kl_from_normal(self, loc, scale):
        """Closed-form `KL(N(loc, scale) || self)` summed, or None."""
        return None


@register
class Normal(Prior):
    """Independent `N(loc, scale)` over every weight (default `N(0, 1)`)."""

    closed_form_kl = True

    def __init__(self, loc=0.0, scale=1.0):
        self.loc = _validation.number(loc, "loc")
        self.scale = _validation.number(scale, "scale", lower=0, strict=True)

    def log_prob(self, weights):
        return normal_log_prob(weights, self.loc, self.scale)

    def kl_from_normal(self, loc, scale):
        return normal_kl_sum(loc, scale, self.loc, self.scale)

    def get_config(self):
        return {"loc": self.loc, "scale": self.scale}


@register
class ScaleMixtureNormal(Prior):
    """Scale mixture of two zero-mean normals (Blundell et al. 2015).

    `p(w) = mixture_weight * N(0, scale1) + (1 - mixture_weight) * N(0,
    scale2)`, independently per weight. The KL against a normal posterior
    has no closed form, so layers estimate it with one posterior draw.

    Args:
        mixture_weight: weight of the first component, in (0, 1).
        scale1: standard deviation of the first component.
        scale2: standard deviation of the second component.
    """

    def __init__(self, mixture_weight=0.5, scale1=1.0, scale2=0.0025):
        try:
            weight = float(mixture_weight)
        except (TypeError, ValueError):
            weight = float("nan")
        if not 0.0 < weight < 1.0:
            raise _validation.invalid(
                "mixture_weight",
                "Expected a number strictly between 0 and 1.",
                mixture_weight,
            )
        self.mixture_weight = weight
        self.scale1 = _validation.number(scale1, "scale1", lower=0, strict=True)
        self.scale2 = _validation.number(scale2, "scale2", lower=0, strict=True)

    def _components(self):
        return (
            (self.mixture_weight, self.scale1),
            (1.0 - self.mixture_weight, self.scale2),
        )

    def log_prob(self, weights):
        (w1, s1), (w2, s2) = self._components()
        return ops.logaddexp(
            math.log(w1) + normal_log_prob(weights, 0.0, s1),
            math.log(w2) + normal_log_prob(weights, 0.0, s2),
        )

    def get_config(self):
        return {
            "mixture_weight": self.mixture_weight,
            "scale1": self.scale1,
            "scale2": self.scale2,
        }


@register
class SpikeAndSlab(ScaleMixtureNormal):
    """Equal mixture of a unit normal spike and a wide normal slab.

    `p(w) = 0.5 N(0, 1) + 0.5 N(0, 2000)` by default, the prior of TFP's
    experimental variational layers.

    Args:
        mixture_weight: weight of the spike, in (0, 1).
        spike_scale: standard deviation of the spike.
        slab_scale: standard deviation of the slab.
    """

    def __init__(self, mixture_weight=0.5, spike_scale=1.0, slab_scale=2000.0):
        # Checked here so that an error names the argument the user passed.
        spike_scale = _validation.number(
            spike_scale, "spike_scale", lower=0, strict=True
        )
        slab_scale = _validation.number(
            slab_scale, "slab_scale", lower=0, strict=True
        )
        super().__init__(mixture_weight, spike_scale, slab_scale)

    def get_config(self):
        return {
            "mixture_weight": self.mixture_weight,
            "spike_scale": self.scale1,
            "slab_scale": self.scale2,
        }


_REGISTRY = _registry.Registry(
    "prior",
    "keras_bayes.priors",
    Prior,
    {
        "normal": Normal,
        "scale_mixture_normal": ScaleMixtureNormal,
        "spike_and_slab": SpikeAndSlab,
    },
    allow_none=True,
)
serialize = _registry.serialize
deserialize = _registry.deserialize
get = _REGISTRY.get
names = _REGISTRY.names
