"""The KL in `fit`'s logs: `kl` next to `loss`, with no user code.

Keras logs what a model's metrics report, and on JAX a metric can only be
updated where the train step maps the metrics' state: in `compute_loss`
(a metric updated inside a layer's `call` runs in a stateless scope whose
metric updates are dropped). So:

- every Bayesian layer owns a `KLMetric` (made in `build`, so that it
  exists before `fit` collects the metrics' state) and, in a training
  call, notes the weighted KL it added with `add_loss`;
- the first time a Bayesian layer is called inside a model, the model
  instance's `compute_loss` is wrapped: after the loss, it sums the KL
  terms that its Bayesian layers noted since the last loss and adds the
  sum to the metric of the model's first Bayesian layer, which reports it
  as `kl` (the mean over the epoch, weighted by batch size, as Keras
  weighs `loss`). The terms are the tensors that entered the loss, so
  `kl` is the KL in the loss.

`kl` appears in training logs only (`History`, the progress bar); an
evaluation reports its `loss` as before.
"""

import keras
from keras import ops
from keras.src.backend.common import global_state

from keras_bayes._export import register

_WRAPPED = "_keras_bayes_kl_logging"


@register
class KLMetric(keras.metrics.Metric):
    """The weighted KL of a model's Bayesian layers, averaged over steps.

    Owned by each Bayesian layer; only the one that a model's wrapped
    `compute_loss` updates reports, as `kl`, and only in training. Others
    report nothing, so the logs hold one `kl` per model.
    """

    def __init__(self, name="kl", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(
            shape=(), initializer="zeros", name="total"
        )
        self.count = self.add_variable(
            shape=(), initializer="zeros", name="count"
        )
        self.reporting = False

    def update_state(self, value, weight):
        value = ops.cast(value, self.dtype)
        weight = ops.cast(weight, self.dtype)
        self.total.assign(self.total + value * weight)
        self.count.assign(self.count + weight)

    def result(self):
        if not self.reporting:
            return {}
        return {self.name: ops.divide_no_nan(self.total, self.count)}

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)


class _Pending:
    """The weighted KL terms a layer added in training calls of the current
    forward pass (a plain object: Keras does not track it)."""

    def __init__(self):
        self.terms = []
        self.context = None


def attach(layer):
    """Give a Bayesian layer its metric and its list of pending terms."""
    layer.kl_metric = KLMetric()
    layer._kl_pending = _Pending()


def record(layer, weighted_kl, training):
    """Note a layer's weighted KL of this call for the training logs.

    Called from the layer's `call`, inside Keras' call context, whose
    entry layer is the model when the model was called (a new forward
    pass starts a new list of terms, so that calls whose loss is never
    computed leave nothing behind). Inside JAX's stateless train step the
    model's `call` runs without a context of its own; there the terms are
    collected by the loss computed in the same trace.
    """
    # Read the context without opening one: `Layer._get_call_context` opens
    # a context where none is open (a `stateless_call` runs `call`
    # directly), and only `Layer.__call__` closes it again; left open, it
    # would keep every later call from clearing the layer's losses.
    context = global_state.get_global_attribute("current_call_ctx")
    model = getattr(context, "entry_layer", None)
    pending = layer._kl_pending
    if isinstance(model, keras.Model):
        _wrap_compute_loss(model)
        if pending.context is not context:
            pending.context = context
            pending.terms = []
    if training:
        pending.terms.append(weighted_kl)


def _bayesian_layers(model):
    """The model's built Bayesian layers (the unbuilt ones noted nothing)."""
    # Imported here: `workflows` imports the layers, which import this
    # module.
    from keras_bayes.workflows import bayesian_layers

    return [layer for layer in bayesian_layers(model) if layer.built]


def _batch_size(x):
    for leaf in keras.tree.flatten(x):
        if leaf is not None and len(getattr(leaf, "shape", ())) > 0:
            return ops.shape(leaf)[0]
    return 1


def _wrap_compute_loss(model):
    if getattr(model, _WRAPPED, False):
        return
    original = model.compute_loss

    def compute_loss(
        x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        if getattr(model, "_compute_loss_has_training_arg", True):
            loss = original(x, y, y_pred, sample_weight, training=training)
        else:
            loss = original(x, y, y_pred, sample_weight)
        layers = _bayesian_layers(model)
        terms = []
        for layer in layers:
            terms.extend(layer._kl_pending.terms)
            layer._kl_pending.terms = []
        if layers:
            metric = layers[0].kl_metric
            metric.reporting = bool(terms)
            if terms:
                metric.update_state(ops.sum(ops.stack(terms)), _batch_size(x))
        return loss

    compute_loss.__doc__ = original.__doc__
    object.__setattr__(model, "compute_loss", compute_loss)
    object.__setattr__(model, _WRAPPED, True)
