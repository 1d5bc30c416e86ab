"""The linear maps behind the layers: convolution and dense.

A linear map holds a layer's validated geometry (filters, kernel size,
strides, ...) and knows everything shape-related: the kernel and bias
shapes, the output shape, how to apply a kernel to inputs, and the shapes of
the Flipout sign tensors. Layers combine one linear map with an estimator
(`variational.py`) or with a plain kernel (`batched.py`), so every rank and
layer kind shares one implementation of each.

A map can also hold a batch of independent members (`batch_shape`): the
kernel and bias get the leading axes `batch_shape`, an input without member
axes is fed to every member, an input with them (right after the batch axis)
is fed member by member, and the outputs carry the member axes right after
the batch axis. Estimators never see the members: the map folds them into
its convolutions.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_bayes import _validation, config


def _member_strategy(transpose):
    strategy = config.member_strategy()
    if transpose and keras.backend.backend() == "tensorflow":
        # TensorFlow vectorizes a transposed convolution whose kernel varies
        # with the member into a while loop, which XLA (`jit_compile`)
        # refuses.
        return "per_member"
    return strategy


def _torch_channels_view(rank):
    # PyTorch has channels-last memory formats for 2D and 3D convolutions
    # only (`benchmarks/run.py` measured the 2D training step).
    return (
        config.torch_channels_view()
        and keras.backend.backend() == "torch"
        and rank > 1
    )


def _conv_output_length(length, kernel, stride, dilation, padding):
    if length is None:
        return None
    if padding == "same" or padding == "causal":
        return -(-length // stride)
    span = dilation * (kernel - 1) + 1
    return (length - span) // stride + 1


def _conv_transpose_output_length(
    length, kernel, stride, dilation, padding, output_padding
):
    # Keras' convention on every backend: without `output_padding`,
    # "valid" gives `(length - 1) * stride + max(span, stride)` and "same"
    # gives `length * stride`; with it, the span (valid) or its parity
    # (same) is added to `(length - 1) * stride`, plus the padding.
    if length is None:
        return None
    span = dilation * (kernel - 1) + 1
    if output_padding is None:
        if padding == "valid":
            return (length - 1) * stride + max(span, stride)
        return length * stride
    if padding == "valid":
        return (length - 1) * stride + span + output_padding
    return (length - 1) * stride + span % 2 + output_padding


def _dims(x):
    """Static sizes where known, dynamic ones elsewhere; batch as -1."""
    dynamic = ops.shape(x)
    dims = [-1]
    for i, size in enumerate(x.shape[1:], start=1):
        dims.append(dynamic[i] if size is None else size)
    return dims


class LinearMap:
    """Interface shared by `ConvMap` and `DenseMap`.

    Subclasses set `filters`, call `_set_batch_shape` and implement the
    per-member methods `_member_input_channels`, `_member_output_shape`,
    `_member_kernel_shape`, `_apply` (no members), `_apply_broadcast` and
    `_apply_members`.
    """

    filters = None
    batch_shape = ()
    num_members = 1
    # Rank of one member's input (batch axis included); None: any.
    member_ndim = None

    def _set_batch_shape(self, batch_shape):
        self.batch_shape = _validation.batch_shape(batch_shape)
        self.num_members = math.prod(self.batch_shape)

    @property
    def channel_axis(self):
        return -1

    @property
    def _channel_from_end(self):
        """The channel axis as a negative index, valid with member axes."""
        return -1

    # -- shapes -----------------------------------------------------------

    def has_member_axes(self, input_shape, layer_name="the layer"):
        """Whether inputs carry member axes; checks them against the map.

        Without member axes, an input goes to every member.
        """
        if not self.batch_shape:
            return False
        input_shape = tuple(input_shape)
        k = len(self.batch_shape)
        if len(input_shape) == self.member_ndim:
            return False
        if (
            len(input_shape) == self.member_ndim + k
            and tuple(input_shape[1 : 1 + k]) == self.batch_shape
        ):
            return True
        raise ValueError(
            f"Input 0 of layer '{layer_name}' is incompatible with the "
            f"layer: with batch_shape={self.batch_shape} it expects inputs "
            f"of rank {self.member_ndim} (fed to every member) or of rank "
            f"{self.member_ndim + k} with axes 1 to {k} equal to "
            f"{self.batch_shape} (one input per member). Full shape "
            f"received: {input_shape}"
        )

    def _member_view(self, input_shape, layer_name):
        """One member's input shape, with the batch axis."""
        input_shape = tuple(input_shape)
        if self.has_member_axes(input_shape, layer_name):
            return input_shape[:1] + input_shape[1 + len(self.batch_shape) :]
        return input_shape

    def input_channels(self, input_shape, layer_name):
        """Check an input shape and return its number of channels."""
        return self._member_input_channels(
            self._member_view(input_shape, layer_name), layer_name
        )

    def output_shape(self, input_shape, layer_name):
        shape = self._member_output_shape(
            self._member_view(input_shape, layer_name), layer_name
        )
        return shape[:1] + self.batch_shape + shape[1:]

    def kernel_shape(self, in_channels):
        return self.batch_shape + self._member_kernel_shape(in_channels)

    def bias_shape(self):
        return self.batch_shape + (self.filters,)

    def input_spec(self, input_shape, in_channels):
        """The `InputSpec` of a layer built for `input_shape`."""
        if not self.batch_shape:
            return keras.layers.InputSpec(
                ndim=len(input_shape), axes={self.channel_axis: in_channels}
            )
        return keras.layers.InputSpec(
            min_ndim=self.member_ndim,
            max_ndim=self.member_ndim + len(self.batch_shape),
            axes={self._channel_from_end: in_channels},
        )

    # -- application ------------------------------------------------------

    def __call__(self, inputs, kernel):
        if not self.batch_shape:
            return self._apply(inputs, kernel)
        k = len(self.batch_shape)
        members = self.has_member_axes(inputs.shape)
        kernel = ops.reshape(
            kernel, (self.num_members,) + tuple(kernel.shape[k:])
        )
        if members:
            dims = _dims(inputs)
            inputs = ops.reshape(inputs, [-1, self.num_members] + dims[1 + k :])
            outputs = self._apply_members(inputs, kernel)
        else:
            outputs = self._apply_broadcast(inputs, kernel)
        # `outputs` has one flat member axis; restore `batch_shape`.
        dims = _dims(outputs)
        return ops.reshape(outputs, [-1, *self.batch_shape] + dims[2:])

    def add_bias(self, outputs, bias):
        if not self.batch_shape:
            if self.channel_axis == -1:
                return outputs + bias
            rank = len(outputs.shape)
            shape = [1] * rank
            shape[self.channel_axis] = self.filters
            return outputs + ops.reshape(bias, shape)
        member_rank = len(outputs.shape) - len(self.batch_shape)
        shape = [1] * (member_rank - 1)
        shape[self._channel_from_end] = self.filters
        return outputs + ops.reshape(bias, self.batch_shape + tuple(shape))

    def sign_shapes(self, inputs):
        """Shapes of Flipout's input and output sign tensors.

        One sign per example, member and channel, broadcast over every
        other axis. Both shapes have the member axes: multiply the signs
        with `expand_members(inputs)`.
        """
        members = self.has_member_axes(inputs.shape)
        k = len(self.batch_shape) if members else 0
        member_rank = len(inputs.shape) - k
        in_shape = [1] * (member_rank - 1)
        out_shape = list(in_shape)
        in_shape[self._channel_from_end] = inputs.shape[self._channel_from_end]
        out_shape[self._channel_from_end] = self.filters
        prefix = [ops.shape(inputs)[0], *self.batch_shape]
        return tuple(prefix + in_shape), tuple(prefix + out_shape)

    def expand_members(self, inputs):
        """Inputs with (size-1, broadcasting) member axes, if they lack them."""
        if not self.batch_shape or self.has_member_axes(inputs.shape):
            return inputs
        for _ in self.batch_shape:
            inputs = ops.expand_dims(inputs, 1)
        return inputs


class ConvMap(LinearMap):
    """Convolution (or transposed convolution) geometry of rank 1, 2 or 3."""

    def __init__(
        self,
        rank,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
        transpose=False,
        output_padding=None,
        batch_shape=(),
    ):
        self.rank = rank
        self.member_ndim = rank + 2
        self.transpose = transpose
        self.filters = _validation.positive_int(filters, "filters")
        self.kernel_size = _validation.int_tuple(
            kernel_size, rank, "kernel_size"
        )
        self.strides = _validation.int_tuple(strides, rank, "strides")
        self.dilation_rate = _validation.int_tuple(
            dilation_rate, rank, "dilation_rate"
        )
        self.padding = _validation.padding(
            padding, allow_causal=rank == 1 and not transpose
        )
        self.data_format = _validation.data_format(data_format)
        self.groups = _validation.positive_int(groups, "groups")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "Invalid value for arguments `strides` and `dilation_rate`. "
                "A stride greater than 1 cannot be combined with a dilation "
                f"rate greater than 1. Received: strides={strides!r}, "
                f"dilation_rate={dilation_rate!r}"
            )
        if self.filters % self.groups:
            raise _validation.invalid(
                "groups",
                f"Expected a divisor of `filters` (filters={self.filters}).",
                groups,
            )
        self.output_padding = None
        if output_padding is not None:
            self.output_padding = _validation.int_tuple(
                output_padding, rank, "output_padding", allow_zero=True
            )
            for pad, stride in zip(self.output_padding, self.strides):
                if pad >= stride:
                    raise _validation.invalid(
                        "output_padding",
                        "Expected every entry to be smaller than the "
                        f"matching stride (strides={self.strides}).",
                        output_padding,
                    )
        self._set_batch_shape(batch_shape)

    @property
    def channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    @property
    def _channel_from_end(self):
        return -1 if self.data_format == "channels_last" else -self.rank - 1

    def get_config(self):
        config = {
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
        }
        if self.transpose:
            config["output_padding"] = self.output_padding
        else:
            config["groups"] = self.groups
        config["batch_shape"] = self.batch_shape
        return config

    # -- one member -------------------------------------------------------

    def _member_input_channels(self, input_shape, layer_name):
        if len(input_shape) != self.rank + 2:
            raise ValueError(
                f"Input 0 of layer '{layer_name}' is incompatible with the "
                f"layer: expected ndim={self.rank + 2} (batch, "
                f"{self.rank} spatial dimension(s), channels), found "
                f"ndim={len(input_shape)}. Full shape received: "
                f"{tuple(input_shape)}"
            )
        channels = input_shape[self.channel_axis]
        if channels is None:
            raise ValueError(
                f"The channel dimension of the inputs of layer "
                f"'{layer_name}' should be defined. Found None. Full shape "
                f"received: {tuple(input_shape)}"
            )
        if channels % self.groups:
            raise ValueError(
                f"The number of input channels of layer '{layer_name}' must "
                f"be divisible by `groups`. Received: groups={self.groups}, "
                f"input channels={channels}"
            )
        return channels

    def _member_kernel_shape(self, in_channels):
        if self.transpose:
            return self.kernel_size + (self.filters, in_channels)
        return self.kernel_size + (in_channels // self.groups, self.filters)

    def _spatial_axes(self):
        if self.data_format == "channels_last":
            return tuple(range(1, self.rank + 1))
        return tuple(range(2, self.rank + 2))

    def _member_output_shape(self, input_shape, layer_name):
        input_shape = tuple(input_shape)
        self._member_input_channels(input_shape, layer_name)
        shape = list(input_shape)
        for i, axis in enumerate(self._spatial_axes()):
            if self.transpose:
                pad = self.output_padding
                length = _conv_transpose_output_length(
                    input_shape[axis],
                    self.kernel_size[i],
                    self.strides[i],
                    self.dilation_rate[i],
                    self.padding,
                    None if pad is None else pad[i],
                )
            else:
                length = _conv_output_length(
                    input_shape[axis],
                    self.kernel_size[i],
                    self.strides[i],
                    self.dilation_rate[i],
                    self.padding,
                )
            if length is not None and length <= 0:
                raise ValueError(
                    f"The inputs of layer '{layer_name}' are too small along "
                    f"spatial axis {axis}: size {input_shape[axis]} gives an "
                    f"empty output with kernel_size={self.kernel_size}, "
                    f"dilation_rate={self.dilation_rate} and "
                    f"padding='{self.padding}'. Full shape received: "
                    f"{input_shape}"
                )
            shape[axis] = length
        shape[self.channel_axis] = self.filters
        return tuple(shape)

    def _apply(self, inputs, kernel):
        """One (transposed) convolution of inputs without member axes."""
        padding = self.padding
        if padding == "causal":
            # Pad only the past so that output t sees inputs up to t.
            left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
            pads = [[0, 0], [left, 0], [0, 0]]
            if self.data_format == "channels_first":
                pads = [[0, 0], [0, 0], [left, 0]]
            inputs = ops.pad(inputs, pads)
            padding = "valid"
        data_format = self.data_format
        channels_view = data_format == "channels_last" and _torch_channels_view(
            self.rank
        )
        if channels_view:
            # PyTorch convolves channels-first tensors. Keras' own
            # channels_last path copies the input into that layout (and, for
            # convolutions, back into channels-last memory for oneDNN); a
            # channels-first view of the same memory costs no copy, and the
            # output comes back as a channels-last view. Same arithmetic.
            # (`transpose`, not `moveaxis`: the former also runs inside
            # `vectorized_map`.)
            last = self.rank + 1
            inputs = ops.transpose(inputs, (0, last, *range(1, last)))
            data_format = "channels_first"
        if self.transpose:
            outputs = ops.conv_transpose(
                inputs,
                kernel,
                strides=self.strides,
                padding=padding,
                output_padding=self.output_padding,
                data_format=data_format,
                dilation_rate=self.dilation_rate,
            )
        else:
            outputs = ops.conv(
                inputs,
                kernel,
                strides=self.strides,
                padding=padding,
                data_format=data_format,
                dilation_rate=self.dilation_rate,
            )
        if channels_view:
            outputs = ops.transpose(outputs, (0, *range(2, last + 1), 1))
        return outputs

    # -- members ----------------------------------------------------------
    #
    # Kernels arrive with one flat member axis in front: `(B, *kernel)`.
    # Inputs with members arrive as `(N, B, ...)`; outputs leave as
    # `(N, B, ...)` with one member's output layout after the member axis.

    def _apply_broadcast(self, inputs, kernel):
        # Every member sees the same input: the members' kernels side by
        # side on the output axis make a single convolution.
        members, rank = self.num_members, self.rank
        if self.transpose:
            # (B, *K, F, C) -> (*K, B * F, C)
            kernel = ops.transpose(
                kernel, (*range(1, rank + 1), 0, rank + 1, rank + 2)
            )
            kernel = ops.reshape(
                kernel, self.kernel_size + (-1, kernel.shape[-1])
            )
            return self._split_members(self._apply(inputs, kernel), groups=1)
        # Each group's outputs must stay together: (B, *K, Cg, G * Fg) ->
        # (*K, Cg, G, B, Fg).
        groups = self.groups
        kernel = ops.reshape(
            kernel,
            (members,) + tuple(kernel.shape[1:-1]) + (groups, -1),
        )
        kernel = ops.transpose(
            kernel, (*range(1, rank + 2), rank + 2, 0, rank + 3)
        )
        kernel = ops.reshape(kernel, tuple(kernel.shape[: rank + 1]) + (-1,))
        return self._split_members(self._apply(inputs, kernel), groups)

    def _apply_members(self, inputs, kernel):
        strategy = _member_strategy(self.transpose)
        if strategy == "per_member":
            return ops.stack(
                [
                    self._apply(inputs[:, member], kernel[member])
                    for member in range(self.num_members)
                ],
                axis=1,
            )
        if self.transpose:
            outputs = ops.vectorized_map(
                lambda pair: self._apply(pair[0], pair[1]),
                (ops.moveaxis(inputs, 1, 0), kernel),
            )
            return ops.moveaxis(outputs, 0, 1)
        # Member b's group g is group b * G + g of one grouped convolution:
        # channels and kernels flatten member-major.
        rank = self.rank
        kernel = ops.transpose(
            kernel, (*range(1, rank + 2), 0, rank + 2)
        )  # (*K, Cg, B, F)
        kernel = ops.reshape(kernel, tuple(kernel.shape[: rank + 1]) + (-1,))
        outputs = self._apply(self._merge_members(inputs), kernel)
        return self._split_members(outputs, groups=1)

    def _merge_members(self, inputs):
        """`(N, B, *member input)` -> member-major channels, no member axis."""
        dims = _dims(inputs)
        if self.data_format == "channels_first":
            return ops.reshape(inputs, [-1, dims[1] * dims[2]] + dims[3:])
        rank = self.rank
        inputs = ops.transpose(
            inputs, (0, *range(2, rank + 2), 1, rank + 2)
        )  # (N, *S, B, C)
        channels = dims[1] * dims[rank + 2]
        return ops.reshape(inputs, [-1] + dims[2 : rank + 2] + [channels])

    def _split_members(self, outputs, groups):
        """Convolution outputs with `(groups, B, F / groups)` channels ->
        `(N, B, *member output)`."""
        members, rank = self.num_members, self.rank
        per_group = self.filters // groups
        dims = _dims(outputs)
        if self.data_format == "channels_first":
            spatial = dims[2:]
            outputs = ops.reshape(
                outputs, [-1, groups, members, per_group] + spatial
            )
            if groups > 1:
                outputs = ops.transpose(
                    outputs, (0, 2, 1, 3, *range(4, rank + 4))
                )
            return ops.reshape(outputs, [-1, members, self.filters] + spatial)
        spatial = dims[1 : rank + 1]
        outputs = ops.reshape(
            outputs, [-1] + spatial + [groups, members, per_group]
        )
        outputs = ops.transpose(
            outputs, (0, rank + 2, *range(1, rank + 2), rank + 3)
        )  # (N, B, *S, G, Fg)
        return ops.reshape(outputs, [-1, members] + spatial + [self.filters])


class DenseMap(LinearMap):
    """A dense map over the last axis: `inputs @ kernel`.

    Without `batch_shape` the inputs may have any number of axes; with it,
    inputs are `(batch, in_features)` (fed to every member) or
    `(batch, *batch_shape, in_features)`.
    """

    def __init__(self, units, batch_shape=()):
        self.filters = _validation.positive_int(units, "units")
        self._set_batch_shape(batch_shape)
        if self.batch_shape:
            self.member_ndim = 2

    def get_config(self):
        return {"units": self.filters, "batch_shape": self.batch_shape}

    def _member_input_channels(self, input_shape, layer_name):
        if len(input_shape) < 2:
            raise ValueError(
                f"Input 0 of layer '{layer_name}' is incompatible with the "
                "layer: expected min_ndim=2, found "
                f"ndim={len(input_shape)}. Full shape received: "
                f"{tuple(input_shape)}"
            )
        if input_shape[-1] is None:
            raise ValueError(
                f"The last dimension of the inputs of layer '{layer_name}' "
                "should be defined. Found None. Full shape received: "
                f"{tuple(input_shape)}"
            )
        return input_shape[-1]

    def _member_kernel_shape(self, in_channels):
        return (in_channels, self.filters)

    def _member_output_shape(self, input_shape, layer_name):
        self._member_input_channels(input_shape, layer_name)
        return tuple(input_shape)[:-1] + (self.filters,)

    def _apply(self, inputs, kernel):
        return ops.matmul(inputs, kernel)

    def _apply_broadcast(self, inputs, kernel):
        return ops.einsum("ni,bio->nbo", inputs, kernel)

    def _apply_members(self, inputs, kernel):
        return ops.einsum("nbi,bio->nbo", inputs, kernel)


class _MemberInitializer:
    """Draws each member's slice with the wrapped initializer on its own.

    So fan-based initializers (Glorot, He) see one member's kernel shape,
    and members start different from each other.
    """

    def __init__(self, initializer, batch_shape):
        self.batch_shape = batch_shape
        count = math.prod(batch_shape)
        if not isinstance(initializer, keras.initializers.Initializer):
            self._members = [initializer] * count
            return
        config = initializer.get_config()
        seed = config.get("seed")
        if "seed" not in config or isinstance(
            getattr(initializer, "seed", None), keras.random.SeedGenerator
        ):
            # Deterministic, or advancing its own generator on each call.
            self._members = [initializer] * count
            return
        self._members = []
        for member in range(count):
            if isinstance(seed, int):
                # Reproducible and distinct per member.
                entropy = np.random.SeedSequence([abs(seed), member])
                config = dict(config, seed=int(entropy.generate_state(1)[0]))
            # An unseeded copy made from the config draws a new seed.
            self._members.append(type(initializer).from_config(config))

    def __call__(self, shape, dtype=None):
        member_shape = tuple(shape)[len(self.batch_shape) :]
        values = [
            initializer(member_shape, dtype=dtype)
            for initializer in self._members
        ]
        return ops.reshape(ops.stack(values), shape)


def member_initializer(initializer, batch_shape):
    """`initializer` applied member by member (itself when no members)."""
    if not batch_shape:
        return initializer
    return _MemberInitializer(initializer, batch_shape)


class _MemberRegularizer:
    """The wrapped regularizer summed over the members' slices."""

    def __init__(self, regularizer, batch_shape):
        self.regularizer = regularizer
        self.batch_shape = batch_shape

    def __call__(self, weights):
        k = len(self.batch_shape)
        weights = ops.reshape(weights, (-1,) + tuple(weights.shape[k:]))
        return sum(
            self.regularizer(weights[member])
            for member in range(math.prod(self.batch_shape))
        )


class _MemberConstraint:
    """The wrapped constraint applied to each member's slice."""

    def __init__(self, constraint, batch_shape):
        self.constraint = constraint
        self.batch_shape = batch_shape

    def __call__(self, weights):
        shape = tuple(weights.shape)
        k = len(self.batch_shape)
        weights = ops.reshape(weights, (-1,) + shape[k:])
        constrained = [
            self.constraint(weights[member])
            for member in range(math.prod(self.batch_shape))
        ]
        return ops.reshape(ops.stack(constrained), shape)


# Regularizers that are sums over elements: the same on the whole batch.
_ELEMENTWISE_REGULARIZERS = (
    keras.regularizers.L1,
    keras.regularizers.L2,
    keras.regularizers.L1L2,
)


def member_regularizer(regularizer, batch_shape):
    """`regularizer` summed over members, as for separate layers."""
    if (
        regularizer is None
        or not batch_shape
        or isinstance(regularizer, _ELEMENTWISE_REGULARIZERS)
    ):
        return regularizer
    return _MemberRegularizer(regularizer, batch_shape)


def member_constraint(constraint, batch_shape):
    """`constraint` applied member by member, as for separate layers."""
    if constraint is None or not batch_shape:
        return constraint
    return _MemberConstraint(constraint, batch_shape)
