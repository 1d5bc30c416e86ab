"""Shape arithmetic of convolutions: pure functions of ints, no tensors."""

from keras import ops


def conv_output_length(length, kernel, stride, dilation, padding):
    """Output length of a convolution along one spatial axis (None: unknown).

    "same" and "causal" give `ceil(length / stride)`; "valid" gives the
    number of whole dilated windows.
    """
    if length is None:
        return None
    if padding in ("same", "causal"):
        return -(-length // stride)
    span = dilation * (kernel - 1) + 1
    return (length - span) // stride + 1


def conv_transpose_output_length(
    length, kernel, stride, dilation, padding, output_padding
):
    """Output length of a transposed convolution along one spatial axis.

    Keras' convention on every backend: without `output_padding`, "valid"
    gives `(length - 1) * stride + max(span, stride)` and "same" gives
    `length * stride`; with it, the span (valid) or its parity (same) is
    added to `(length - 1) * stride`, plus the padding.
    """
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


def dims(x):
    """The sizes of `x`: static where known, dynamic elsewhere; batch -1.

    For `ops.reshape` targets that keep the batch axis free.
    """
    dynamic = ops.shape(x)
    sizes = [-1]
    for i, size in enumerate(x.shape[1:], start=1):
        sizes.append(dynamic[i] if size is None else size)
    return sizes
