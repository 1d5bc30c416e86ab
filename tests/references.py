"""NumPy references, in float64, for what the layers compute.

Each function is written from the definition of what it computes, with
neither keras-bayes nor Keras, so that a test comparing a layer with it
compares two independent computations. `tests/test_references.py` checks
every one on values worked out by hand, and the convolutions also against
Keras' own layers.

Convolutions are channels_last: inputs `(N, *spatial, channels)`.
"""

import math

import numpy as np

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# The documented floor of the mean-field posterior scale.
SCALE_FLOOR = 1e-5


def _float64(*arrays):
    return [np.asarray(a, "float64") for a in arrays]


def softplus(u):
    """`log(1 + exp(u))`, without overflow for large `u`."""
    return np.logaddexp(0.0, np.asarray(u, "float64"))


def posterior_scale(untransformed):
    """The documented mean-field posterior scale, `softplus(u) + 1e-5`."""
    return softplus(untransformed) + SCALE_FLOOR


# -- linear maps ------------------------------------------------------------


def dense(x, kernel, bias=None):
    """`x @ kernel + bias` over the last axis of `x`."""
    x, kernel = _float64(x, kernel)
    out = x @ kernel
    if bias is not None:
        out = out + np.asarray(bias, "float64")
    return out


def _per_axis(value, rank, default):
    if value is None or isinstance(value, int):
        return (default if value is None else value,) * rank
    return tuple(value)


def _geometry(x, kernel_size, strides, dilation_rate):
    rank = x.ndim - 2
    strides = _per_axis(strides, rank, 1)
    dilation_rate = _per_axis(dilation_rate, rank, 1)
    spans = [dilation_rate[i] * (kernel_size[i] - 1) + 1 for i in range(rank)]
    return rank, strides, dilation_rate, spans


def _conv_padding(size, span, stride, padding):
    """`(before, after)` zeros added to one spatial axis."""
    if padding == "valid":
        return 0, 0
    if padding == "causal":
        return span - 1, 0
    # "same": ceil(size / stride) outputs; an odd total puts the extra zero
    # after the input.
    outputs = -(-size // stride)
    total = max((outputs - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def conv(
    x, kernel, strides=None, dilation_rate=None, padding="valid", groups=1
):
    """Convolution (a cross-correlation, as in Keras).

    Args:
        x: `(N, *spatial, C_in)`.
        kernel: `(*kernel_size, C_in // groups, C_out)`.
        strides, dilation_rate: an integer, or one per spatial axis.
        padding: `"valid"` (no padding), `"same"` (`ceil(size / stride)`
            outputs; zeros split evenly, an odd one after the input) or
            `"causal"` (rank 1: `span - 1` zeros before the input).
        groups: the channels and the filters are cut into `groups` equal
            parts; filters of part g see the channels of part g only.

    Output position `o` along an axis sums, over kernel offsets `k`, the
    padded input at `o * stride + k * dilation` times the tap `kernel[k]`.
    """
    x, kernel = _float64(x, kernel)
    rank, strides, dilation_rate, spans = _geometry(
        x, kernel.shape[: x.ndim - 2], strides, dilation_rate
    )
    pads = [
        _conv_padding(x.shape[1 + i], spans[i], strides[i], padding)
        for i in range(rank)
    ]
    x = np.pad(x, [(0, 0), *pads, (0, 0)])
    out_size = [
        (x.shape[1 + i] - spans[i]) // strides[i] + 1 for i in range(rank)
    ]
    group_in, filters = kernel.shape[-2], kernel.shape[-1]
    group_out = filters // groups
    out = np.zeros((x.shape[0], *out_size, filters))
    for offset in np.ndindex(*kernel.shape[:rank]):
        window = tuple(
            slice(
                offset[i] * dilation_rate[i],
                offset[i] * dilation_rate[i]
                + (out_size[i] - 1) * strides[i]
                + 1,
                strides[i],
            )
            for i in range(rank)
        )
        taps = x[(slice(None),) + window]
        for g in range(groups):
            channels = slice(g * group_in, (g + 1) * group_in)
            part = slice(g * group_out, (g + 1) * group_out)
            out[..., part] += taps[..., channels] @ kernel[offset][:, part]
    return out


def _transpose_length(length, span, stride, padding, output_padding):
    """Keras' output length of a transposed convolution along one axis."""
    if output_padding is None:
        if padding == "valid":
            return length * stride + max(span - stride, 0)
        return length * stride
    removed = 2 * (span // 2) if padding == "same" else 0
    return (length - 1) * stride + span - removed + output_padding


def conv_transpose(
    x,
    kernel,
    strides=None,
    dilation_rate=None,
    padding="valid",
    output_padding=None,
):
    """Transposed convolution, with Keras' kernel layout.

    Args:
        x: `(N, *spatial, C)`.
        kernel: `(*kernel_size, F, C)`.
        strides, dilation_rate: an integer, or one per spatial axis.
        padding: `"valid"` or `"same"`.
        output_padding: None, an integer, or one per spatial axis.

    Each input position `p` scatters `kernel[k] @ x[p]` to position
    `p * stride + k * dilation` of a full output of `(length - 1) * stride
    + span` positions. The result has Keras' output length: "valid" keeps
    the full output from its start (zeros past its end where the length
    asks for more); "same" drops half the excess positions (rounded down)
    from the start and the rest from the end.
    """
    x, kernel = _float64(x, kernel)
    rank, strides, dilation_rate, spans = _geometry(
        x, kernel.shape[: x.ndim - 2], strides, dilation_rate
    )
    output_padding = _per_axis(output_padding, rank, None)
    full_size = [
        (x.shape[1 + i] - 1) * strides[i] + spans[i] for i in range(rank)
    ]
    full = np.zeros((x.shape[0], *full_size, kernel.shape[-2]))
    for offset in np.ndindex(*kernel.shape[:rank]):
        window = tuple(
            slice(
                offset[i] * dilation_rate[i],
                offset[i] * dilation_rate[i]
                + (x.shape[1 + i] - 1) * strides[i]
                + 1,
                strides[i],
            )
            for i in range(rank)
        )
        full[(slice(None),) + window] += x @ kernel[offset].T

    out_size = [
        _transpose_length(
            x.shape[1 + i], spans[i], strides[i], padding, output_padding[i]
        )
        for i in range(rank)
    ]
    out = np.zeros((x.shape[0], *out_size, kernel.shape[-2]))
    source, target = [slice(None)], [slice(None)]
    for i in range(rank):
        start = 0
        if padding == "same":
            start = max(full_size[i] - out_size[i], 0) // 2
        kept = min(full_size[i] - start, out_size[i])
        source.append(slice(start, start + kept))
        target.append(slice(0, kept))
    out[tuple(target)] = full[tuple(source)]
    return out


# -- distributions ----------------------------------------------------------


def normal_kl(loc, scale, prior_loc, prior_scale):
    """Sum over elements of `KL(N(loc, scale) || N(prior_loc, prior_scale))`.

    Closed form: `log(s0 / s) + (s**2 + (m - m0)**2) / (2 s0**2) - 1/2`.
    """
    loc, scale = _float64(loc, scale)
    return np.sum(
        np.log(prior_scale / scale)
        + (scale**2 + (loc - prior_loc) ** 2) / (2.0 * prior_scale**2)
        - 0.5
    )


def normal_log_density(x, loc, scale):
    """`log N(x; loc, scale)`, elementwise."""
    return -0.5 * ((x - loc) / scale) ** 2 - np.log(scale) - HALF_LOG_2PI


def mixture_log_density(x, weight, scale1, scale2):
    """Log density of `weight N(0, scale1) + (1 - weight) N(0, scale2)`."""
    return np.logaddexp(
        np.log(weight) + normal_log_density(x, 0.0, scale1),
        np.log(1.0 - weight) + normal_log_density(x, 0.0, scale2),
    )


def softmax_cross_entropy(logits, labels):
    """Mean over examples of `-log softmax(logits)[label]`."""
    logits = np.asarray(logits, "float64")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -np.mean(log_probs[np.arange(len(labels)), labels])
