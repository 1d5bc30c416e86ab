"""TFP's default functions, recognised in a tf_keras model config.

`tfp.layers` store every function argument marshalled: the bytecode of the
function (base64), its defaults and its closure. keras-bayes never runs it;
it recognises TFP's own defaults by the source file inside
`tensorflow_probability/python/layers/` and names the code holds, which
`marshal` writes as plain text in every Python version.
"""

import base64
import binascii
import re

# Per kind of argument: TFP's files that define the default, and the names
# its code holds.
LAYERS_FILE = re.compile(rb"tensorflow_probability/python/layers/(\w+)\.py")
DEFAULTS = {
    "posterior": (("util",), (b"loc_scale_fn", b"Independent")),
    "tensor": (
        ("conv_variational", "dense_variational"),
        (b"<lambda>", b"sample"),
    ),
    "prior": (("util",), (b"default_multivariate_normal_fn",)),
    "divergence": (
        ("conv_variational", "dense_variational"),
        (b"<lambda>", b"kl_divergence"),
    ),
}
HINTS = {
    "posterior": "keras-bayes posteriors are `kb.posteriors.MeanFieldNormal` "
    "and `kb.posteriors.Deterministic` (`kernel_posterior=`, "
    "`bias_posterior=`).",
    "tensor": "`posterior_value='mean'` replaces `lambda d: d.mean()`.",
    "prior": "Pass the prior as `kernel_prior=` / `bias_prior=`, e.g. "
    "`kb.priors.Normal(loc, scale)` or `kb.priors.ScaleMixtureNormal(...)`.",
    "divergence": "A divergence divided by N is `kl_weight=1 / N`; other "
    "divergences are not available.",
}
# Function arguments of a `tfp.layers` layer -> which default they have.
FUNCTIONS = {
    f"{weight}_{argument}_fn": kind
    for weight in ("kernel", "bias")
    for argument, kind in (
        ("posterior", "posterior"),
        ("posterior_tensor", "tensor"),
        ("prior", "prior"),
        ("divergence", "divergence"),
    )
}


def is_default(kind, value, value_type):
    """Whether a serialized function is TFP's default for `kind`."""
    if value_type == "function":
        return kind == "prior" and value == "default_multivariate_normal_fn"
    if not isinstance(value, (list, tuple)) or not value:
        return False
    try:
        code = base64.b64decode(value[0])
    except (binascii.Error, TypeError, ValueError):
        return False
    files, markers = DEFAULTS[kind]
    found = LAYERS_FILE.search(code)
    if found is None or found.group(1).decode() not in files:
        return False
    if kind == "posterior" and b"default_multivariate_normal_fn" in code:
        return False
    return all(marker in code for marker in markers)


def problems(entry, path):
    """One message per argument of a layer entry that is not a default."""
    config = entry["config"]
    found = []
    for argument, kind in FUNCTIONS.items():
        value = config.get(argument)
        if value is None:
            continue
        if not is_default(kind, value, config.get(f"{argument}_type")):
            found.append(
                f"layer '{config['name']}' ({entry['class_name']}): "
                f"`{argument}` is not TFP's default but a custom function "
                f"(marshalled bytecode), which keras-bayes does not run. "
                f"{HINTS[kind]} Build the model with keras-bayes layers "
                "and load the trained weights with "
                f"`kb.migrate.load_tfp_weights(model, {path!r})`."
            )
    return found
