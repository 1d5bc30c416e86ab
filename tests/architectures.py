"""The architectures `to_bayesian` is verified on, built small and untrained.

keras.applications models with `weights=None`, ten classes and the smallest
input each allows (32x32, Xception 71x71, InceptionV3 75x75), the narrowest
width where the model has a width argument; keras-hub backbones built from
arguments (no preset, no download). Used by `tests/test_conversion_models.py`
and `benchmarks/conversion_cost.py`.
"""

import importlib.util

import keras


def _applications(name, size=32, **kwargs):
    def build():
        constructor = getattr(keras.applications, name)
        return constructor(
            weights=None,
            input_shape=(size, size, 3),
            classes=10,
            classifier_activation=None,  # logits: differences stay visible
            **kwargs,
        )

    return build


def keras_hub_available():
    return importlib.util.find_spec("keras_hub") is not None


def _hub_resnet():
    import keras_hub

    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[16],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="bottleneck_block",
        image_shape=(32, 32, 3),
    )


def _hub_mobilenet():
    import keras_hub

    return keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[40, 56], [64, 144]],
        stackwise_num_blocks=[2, 2],
        stackwise_num_filters=[[16, 16], [24, 24]],
        stackwise_kernel_size=[[3, 3], [5, 5]],
        stackwise_num_strides=[[2, 1], [2, 1]],
        stackwise_se_ratio=[[None, None], [0.25, 0.25]],
        stackwise_activation=[["relu", "relu"], ["hard_swish", "hard_swish"]],
        stackwise_padding=[[1, 1], [2, 2]],
        output_num_filters=48,
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        last_layer_filter=64,
        squeeze_and_excite=0.5,
        input_num_filters=16,
        image_shape=(32, 32, 3),
    )


def _hub_efficientnet():
    import keras_hub

    return keras_hub.models.EfficientNetBackbone(
        stackwise_kernel_sizes=[3, 3, 3],
        stackwise_num_repeats=[1, 1, 1],
        stackwise_input_filters=[16, 16, 24],
        stackwise_output_filters=[16, 24, 32],
        stackwise_expansion_ratios=[1, 4, 4],
        stackwise_squeeze_and_excite_ratios=[0.0, 0.25, 0.25],
        stackwise_strides=[1, 2, 2],
        stackwise_block_types=["fused", "fused", "unfused"],
        width_coefficient=1.0,
        depth_coefficient=1.0,
        input_shape=(32, 32, 3),
        num_features=64,
    )


# name -> (build function, input shape without the batch axis)
APPLICATIONS = {
    "ResNet50": (_applications("ResNet50"), (32, 32, 3)),
    "MobileNet": (_applications("MobileNet", alpha=0.25), (32, 32, 3)),
    "MobileNetV2": (_applications("MobileNetV2", alpha=0.35), (32, 32, 3)),
    "MobileNetV3Small": (
        _applications("MobileNetV3Small", alpha=0.75),
        (32, 32, 3),
    ),
    "EfficientNetB0": (_applications("EfficientNetB0"), (32, 32, 3)),
    "EfficientNetV2B0": (_applications("EfficientNetV2B0"), (32, 32, 3)),
    "ConvNeXtTiny": (_applications("ConvNeXtTiny"), (32, 32, 3)),
    "DenseNet121": (_applications("DenseNet121"), (32, 32, 3)),
    "Xception": (_applications("Xception", size=71), (71, 71, 3)),
    "NASNetMobile": (_applications("NASNetMobile"), (32, 32, 3)),
    "InceptionV3": (_applications("InceptionV3", size=75), (75, 75, 3)),
    "VGG16": (_applications("VGG16"), (32, 32, 3)),
}
KERAS_HUB = {
    "keras_hub.ResNetBackbone": (_hub_resnet, (32, 32, 3)),
    "keras_hub.MobileNetBackbone": (_hub_mobilenet, (32, 32, 3)),
    "keras_hub.EfficientNetBackbone": (_hub_efficientnet, (32, 32, 3)),
}
ARCHITECTURES = {**APPLICATIONS, **KERAS_HUB}

# The backends that verify each architecture in a default test run. Every
# architecture runs on PyTorch, where a model costs seconds. On TensorFlow
# a model costs about half a minute (`fit`, saving), on JAX one to three
# minutes (each new operation shape compiles), so these run a share that
# keeps the whole suite within CI's time: the kinds of graph each backend
# must handle (operations and nested models, subclassed blocks, separable
# convolutions, preprocessing layers) are covered on each. With
# KERAS_BAYES_ALL_ARCHITECTURES=1 every architecture runs on every backend.
_TORCH = ("torch",)
_TORCH_TF = ("torch", "tensorflow")
CI_BACKENDS = {
    "ResNet50": _TORCH,
    "MobileNet": _TORCH,
    "MobileNetV2": _TORCH,
    "MobileNetV3Small": _TORCH,
    "EfficientNetB0": _TORCH_TF,
    "EfficientNetV2B0": _TORCH,
    "ConvNeXtTiny": _TORCH_TF,
    "DenseNet121": _TORCH,
    "Xception": _TORCH_TF,
    # Keras refuses NASNetMobile on PyTorch ("not available with the torch
    # backend at this time due to an outstanding bug").
    "NASNetMobile": ("tensorflow",),
    "InceptionV3": _TORCH,
    "VGG16": _TORCH,
    "keras_hub.ResNetBackbone": ("torch", "tensorflow", "jax"),
    "keras_hub.MobileNetBackbone": _TORCH_TF,
    "keras_hub.EfficientNetBackbone": ("torch", "tensorflow", "jax"),
}
