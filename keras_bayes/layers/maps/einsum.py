"""`EinsumMap`: `keras.ops.einsum(equation, inputs, kernel)`, the map of
`keras.layers.EinsumDense`.

The equation has one of Keras' three forms, `X,Y->Z`, `...X,Y->...Z` or
`X...,Y->Z...`: `X` names the input axes, `Y` the kernel's and `Z` the
output's. The batch axis is the input's first (inside the ellipsis for the
second form) and the output's first. A kernel axis is an output feature
axis when its letter is in `Z`, otherwise an input feature axis (summed
over); the remaining input axes (e.g. a sequence) are free axes, and the
kernel is shared along them.

Shapes follow Keras' rules: a kernel axis has the size of the output
(`output_shape`) where its letter is in `Z`, else the input's size; the
bias covers the output axes from the first letter of `bias_axes` to the
last, with size 1 along the axes not in `bias_axes`, so that it
broadcasts from the right.
"""

import numbers
import re
import string

import keras
from keras import ops

from keras_bayes import _validation
from keras_bayes.layers.maps.base import LinearMap

_FORMS = (
    (re.compile(r"([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)"), None),
    (re.compile(r"\.\.\.([a-zA-Z]+),([a-zA-Z]+)->\.\.\.([a-zA-Z]+)"), "left"),
    (
        re.compile(r"([a-zA-Z]{2,})\.\.\.,([a-zA-Z]+)->([a-zA-Z]+)\.\.\."),
        "right",
    ),
)
_EQUATION_FORMS = "'X,Y->Z', '...X,Y->...Z' or 'X...,Y->Z...'"


def _parse(equation):
    """`(input, kernel, output, ellipsis side)` of a valid equation."""
    if isinstance(equation, str):
        for pattern, side in _FORMS:
            match = pattern.fullmatch(equation.replace(" ", ""))
            if match:
                return (*match.groups(), side)
    raise _validation.invalid(
        "equation",
        f"Expected an einsum equation of the form {_EQUATION_FORMS}, with "
        "letters for axes (e.g. 'abc,cd->abd').",
        equation,
    )


def _check_equation(equation, inputs, kernel, outputs, side):
    def fail(expected):
        raise _validation.invalid("equation", expected, equation)

    for spec in (inputs, kernel, outputs):
        if len(set(spec)) != len(spec):
            fail(f"Expected each axis letter once per operand, found '{spec}'.")
    for letter in outputs:
        if letter not in inputs and letter not in kernel:
            fail(
                f"Output axis '{letter}' is neither an input axis "
                f"('{inputs}') nor a kernel axis ('{kernel}')."
            )
    for letter in kernel:
        if letter not in inputs and letter not in outputs:
            fail(
                f"Kernel axis '{letter}' is neither an input axis "
                f"('{inputs}') nor an output axis ('{outputs}'): the kernel "
                "must be fully specified."
            )
    if side != "left":
        batch = inputs[0]
        if outputs[0] != batch or batch in kernel:
            fail(
                f"Expected the batch axis (the input's first, '{batch}') to "
                "be the output's first axis and not a kernel axis."
            )


def _output_shape(value, outputs, side):
    """`output_shape` as a tuple of positive ints or None, one per output
    axis after the batch axis (and outside the ellipsis)."""
    expected_length = len(outputs) - (0 if side == "left" else 1)

    def size(entry):
        return (
            isinstance(entry, numbers.Integral)
            and not isinstance(entry, bool)
            and entry > 0
        )

    entries = (value,) if isinstance(value, numbers.Integral) else value
    try:
        entries = tuple(entries)
    except TypeError:
        entries = None
    ok = entries is not None and len(entries) == expected_length
    ok = ok and all(e is None or size(e) for e in entries)
    if not ok:
        raise _validation.invalid(
            "output_shape",
            f"Expected {expected_length} positive ints or None, the output "
            "shape without the batch axis (and without the ellipsis' "
            f"axes), for the output axes '{outputs}'.",
            value,
        )
    return tuple(None if e is None else int(e) for e in entries)


class EinsumMap(LinearMap):
    """`ops.einsum(equation, inputs, kernel)` with Keras' `EinsumDense`
    arguments (`rank` is unused; `arguments` holds `equation`,
    `output_shape` and `bias_axes`).

    With a `batch_shape`, the equation has no ellipsis: one member's input
    has the rank of `X`; an input with the member axes right after the
    batch axis is fed member by member, one without them to every member.
    """

    def __init__(self, rank, arguments, batch_shape=(), layer_name=None):
        equation = arguments["equation"]
        parsed = _parse(equation)
        self.in_letters, self.kernel_letters, self.out_letters = parsed[:3]
        self.ellipsis = parsed[3]
        _check_equation(
            equation,
            self.in_letters,
            self.kernel_letters,
            self.out_letters,
            self.ellipsis,
        )
        self.equation = equation
        self.partial_output_shape = _output_shape(
            arguments["output_shape"], self.out_letters, self.ellipsis
        )
        bias_axes = arguments.get("bias_axes")
        if bias_axes is not None and (
            not isinstance(bias_axes, str)
            or not bias_axes
            or any(letter not in self.out_letters for letter in bias_axes)
        ):
            raise _validation.invalid(
                "bias_axes",
                "Expected a string of output axis letters (of "
                f"'{self.out_letters}' in equation '{equation}'), or None.",
                bias_axes,
            )
        self.bias_axes = bias_axes
        self.kernel_ndim = len(self.kernel_letters)
        if self.ellipsis is None:
            self.member_ndim = len(self.in_letters)
        elif _validation.batch_shape(batch_shape):
            raise _validation.invalid(
                "batch_shape",
                "Members need an equation without an ellipsis (the member "
                f"axes follow the batch axis). Equation: '{equation}'.",
                batch_shape,
            )
        # Kernel axes in the output get their size from `output_shape`.
        offset = 0 if self.ellipsis == "left" else 1
        for letter in self.kernel_letters:
            if letter in self.out_letters and letter not in self.in_letters:
                index = self.out_letters.index(letter) - offset
                if self.partial_output_shape[index] is None:
                    raise _validation.invalid(
                        "output_shape",
                        f"Expected a size for output axis '{letter}', an axis "
                        f"of the kernel (equation '{equation}').",
                        arguments["output_shape"],
                    )
        super().__init__(batch_shape, layer_name)

    def get_config(self):
        return {
            "equation": self.equation,
            "output_shape": self.partial_output_shape,
            "bias_axes": self.bias_axes,
        }

    # -- the equation with its ellipsis written out ------------------------

    def letters(self, ndim):
        """`(input, kernel, output)` letters for a member input of rank
        `ndim`, the ellipsis replaced by letters of its own."""
        free = [c for c in string.ascii_letters if c not in self.equation]
        if self.ellipsis is None:
            return self.in_letters, self.kernel_letters, self.out_letters
        elided = "".join(free[: ndim - len(self.in_letters)])
        if self.ellipsis == "left":
            return (
                elided + self.in_letters,
                self.kernel_letters,
                elided + self.out_letters,
            )
        return (
            self.in_letters + elided,
            self.kernel_letters,
            self.out_letters + elided,
        )

    def _member_letter(self):
        return next(c for c in string.ascii_letters if c not in self.equation)

    def input_features(self, ndim):
        """Input axes summed with the kernel, in input order."""
        inputs, kernel, outputs = self.letters(ndim)
        return [c for c in inputs if c in kernel and c not in outputs]

    def output_features(self, ndim):
        """Output axes of the kernel, in output order."""
        _, kernel, outputs = self.letters(ndim)
        return [c for c in outputs if c in kernel]

    # -- shapes -------------------------------------------------------------

    def _check_rank(self, input_shape):
        ndim = len(input_shape)
        if self.ellipsis is None:
            ok, expected = (
                ndim == len(self.in_letters),
                f"ndim={len(self.in_letters)}",
            )
        else:
            least = len(self.in_letters) + (1 if self.ellipsis == "left" else 0)
            ok, expected = ndim >= least, f"min_ndim={least}"
        if not ok:
            raise ValueError(
                f"Input 0 of layer '{self.layer_name}' is incompatible with "
                f"the layer: expected {expected} (equation "
                f"'{self.equation}'), found ndim={ndim}. Full shape "
                f"received: {tuple(input_shape)}"
            )

    def sizes(self, input_shape):
        """`{letter: size}` of every axis of one member's input shape, the
        kernel and the output (None: unknown)."""
        input_shape = tuple(input_shape)
        self._check_rank(input_shape)
        inputs, _, outputs = self.letters(len(input_shape))
        sizes = dict(zip(inputs, input_shape))
        if self.ellipsis == "left":
            named = outputs[len(outputs) - len(self.out_letters) :]
        else:
            named = self.out_letters[1:]
        for letter, size in zip(named, self.partial_output_shape):
            known = sizes.get(letter)
            if size is not None and known is not None and size != known:
                raise _validation.invalid(
                    "output_shape",
                    f"Expected size {known} at output axis '{letter}', the "
                    f"input's size there (input shape {input_shape}, "
                    f"equation '{self.equation}').",
                    self.partial_output_shape,
                )
            if size is not None:
                sizes[letter] = size
        return sizes

    def member_kernel_shape(self, input_shape):
        """Keras' kernel shape for one member's input shape."""
        sizes = self.sizes(input_shape)
        shape = tuple(sizes[letter] for letter in self.kernel_letters)
        if None in shape:
            raise ValueError(
                f"The kernel of layer '{self.layer_name}' needs the size of "
                f"every input axis it sums over (equation '{self.equation}'). "
                f"Found None. Full input shape received: {tuple(input_shape)}"
            )
        return shape

    def member_bias_shape(self, input_shape):
        """Keras' bias shape (None without `bias_axes`)."""
        if self.bias_axes is None:
            return None
        sizes = self.sizes(input_shape)
        _, _, outputs = self.letters(len(input_shape))
        first = min(outputs.index(letter) for letter in self.bias_axes)
        shape = tuple(
            sizes[letter] if letter in self.bias_axes else 1
            for letter in outputs[first:]
        )
        if None in shape:
            raise _validation.invalid(
                "bias_axes",
                "Expected output axes of known size (input shape "
                f"{tuple(input_shape)}, equation '{self.equation}').",
                self.bias_axes,
            )
        return shape

    def shapes(self, input_shape):
        """`(kernel shape, bias shape)` for an input shape, member axes
        first (bias None without `bias_axes`)."""
        member_shape = self.members.member_view(input_shape)
        bias = self.member_bias_shape(member_shape)
        return (
            self.batch_shape + self.member_kernel_shape(member_shape),
            None if bias is None else self.batch_shape + bias,
        )

    def feature_sizes(self, input_shape):
        """`(input feature sizes, output feature sizes)`, the shapes of
        rank-1's factors (without members)."""
        member_shape = self.members.member_view(input_shape)
        sizes = self.sizes(member_shape)
        ndim = len(member_shape)
        return (
            tuple(sizes[c] for c in self.input_features(ndim)),
            tuple(sizes[c] for c in self.output_features(ndim)),
        )

    def _member_output_shape(self, input_shape):
        sizes = self.sizes(input_shape)
        _, _, outputs = self.letters(len(input_shape))
        return tuple(sizes.get(letter) for letter in outputs)

    def input_spec(self, input_shape, in_channels=None):
        """Rank and the sizes of the input feature axes, as built."""
        member_shape = self.members.member_view(input_shape)
        ndim = len(member_shape)
        inputs = self.letters(ndim)[0]
        axes = {}
        for letter in self.input_features(ndim):
            position = inputs.index(letter)
            if self.ellipsis != "right":
                position -= ndim  # from the end: the same with members
            axes[position] = member_shape[inputs.index(letter)]
        if not self.members:
            return keras.layers.InputSpec(ndim=ndim, axes=axes)
        return keras.layers.InputSpec(
            min_ndim=ndim, max_ndim=ndim + len(self.batch_shape), axes=axes
        )

    def factor_shapes(self, inputs):
        """`((N, *batch_shape, *input features), (N, *batch_shape, *output
        features))`: Flipout's signs and rank-1's factors, per example and
        feature, broadcast over the free axes."""
        in_sizes, out_sizes = self.feature_sizes(inputs.shape)
        prefix = (ops.shape(inputs)[0], *self.batch_shape)
        return prefix + in_sizes, prefix + out_sizes

    # -- application --------------------------------------------------------

    def _apply(self, inputs, kernel):
        return ops.einsum(self.equation, inputs, kernel)

    def _apply_broadcast(self, inputs, kernel):
        member = self._member_letter()
        x, w, y = self.in_letters, self.kernel_letters, self.out_letters
        return ops.einsum(
            f"{x},{member}{w}->{y[0]}{member}{y[1:]}", inputs, kernel
        )

    def _apply_members(self, inputs, kernel):
        member = self._member_letter()
        x, w, y = self.in_letters, self.kernel_letters, self.out_letters
        equation = f"{x[0]}{member}{x[1:]},{member}{w}->{y[0]}{member}{y[1:]}"
        return ops.einsum(equation, inputs, kernel)

    def _view(self, factors, letters, features):
        """`(N, *batch_shape, *features)` factors broadcasting over a
        tensor with axes `letters` (batch, members, then one member's
        axes): size-1 axes where a letter is not a feature."""
        k = len(self.batch_shape)
        for position, letter in enumerate(letters[1:], start=1):
            if letter not in features:
                factors = ops.expand_dims(factors, k + position)
        return factors

    def modulate(self, inputs, kernel, in_factors, out_factors):
        """`f(inputs * in_factors, kernel) * out_factors`, the factors laid
        along the input and output feature axes."""
        inputs = self.members.expand(inputs)
        ndim = len(inputs.shape) - len(self.batch_shape)
        letters_in, _, letters_out = self.letters(ndim)
        scaled = inputs * self._view(
            in_factors, letters_in, self.input_features(ndim)
        )
        outputs = self(scaled, kernel)
        return outputs * self._view(
            out_factors, letters_out, self.output_features(ndim)
        )

    def add_bias(self, outputs, bias):
        """`outputs + bias`, Keras' bias broadcast from the right (after the
        member axes)."""
        if not self.members:
            return outputs + bias
        k = len(self.batch_shape)
        member_rank = len(outputs.shape) - 1 - k  # without batch, members
        missing = member_rank - (len(bias.shape) - k)
        shape = self.batch_shape + (1,) * missing + tuple(bias.shape[k:])
        return outputs + ops.reshape(bias, shape)
