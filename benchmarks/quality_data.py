"""The real data sets of the quality benchmark, read from installed packages.

Nothing is downloaded. Each task is one data set split four ways:

- `train`, `val`, `test`: stratified splits of the in-distribution classes
  (60 %, 15 %, 25 %). Choices are tuned on `val`; `test` is only reported.
- `ood`: every example of the held-out classes, which the model never sees.
  Telling them from the `test` examples by the model's uncertainty is the
  out-of-distribution (OOD) score: a network must say "none of the classes I
  know", which a softmax cannot say except by being unsure.

Tasks:

- `digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images);
  digits 0-7 in distribution, 8 and 9 held out.
- `vowels`: the UCR/UEA archive's JapaneseVowels (Kudo et al. 1999), as
  shipped inside the `aeon` wheel (`aeon/datasets/data/JapaneseVowels/`,
  the equal-length version: 640 utterances of /ae/ by 9 male speakers, 12
  LPC cepstrum coefficients over 25 frames); the label is the speaker.
  Speakers 1-7 in distribution, speakers 8 and 9 held out: the shift a
  speaker-identification model meets when a new person speaks. Only the
  data files are read (by `read_ts` below), aeon's code is never imported,
  so `pip install --no-deps aeon==1.6.0` is enough.
"""

import importlib.util
import pathlib

import numpy as np
from sklearn.model_selection import train_test_split

TEST_FRACTION = 0.25
VAL_FRACTION = 0.15
AEON_INSTALL = "pip install --no-deps aeon==1.6.0"


class DataUnavailable(RuntimeError):
    """The package that ships a data set is not installed."""


def read_ts(path):
    """A `.ts` file of the UCR/UEA archive as `(x, labels)`.

    Equal-length series only: `x` has shape `(num_series, length,
    num_channels)` (float32) and `labels` is an array of the class strings.
    In the format, a line after `@data` holds the channels separated by `:`
    (values by `,`) and the class label last.
    """
    series, labels = [], []
    in_data = False
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                in_data = line.lower() == "@data"
                continue
            *channels, label = line.split(":")
            series.append([[float(v) for v in c.split(",")] for c in channels])
            labels.append(label)
    x = np.asarray(series, dtype="float32").transpose(0, 2, 1)
    return x, np.asarray(labels)


def aeon_data_dir():
    """`aeon/datasets/data` of the installed aeon, without importing aeon."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailable(
            f"JapaneseVowels ships inside aeon's wheel: {AEON_INSTALL}"
        )
    return pathlib.Path(spec.submodule_search_locations[0], "datasets", "data")


def _split(x, labels, ood_classes, seed):
    """Train/val/test of the in-distribution classes, plus the OOD set."""
    ood = np.isin(labels, ood_classes)
    x_in, labels_in = x[~ood], labels[~ood]
    classes = np.unique(labels_in)
    y_in = np.searchsorted(classes, labels_in)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x_in, y_in, test_size=TEST_FRACTION, random_state=seed, stratify=y_in
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest,
        y_rest,
        test_size=VAL_FRACTION / (1 - TEST_FRACTION),
        random_state=seed,
        stratify=y_rest,
    )
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_val": x_val,
        "y_val": y_val,
        "x_test": x_test,
        "y_test": y_test,
        "x_ood": x[ood],
        "num_classes": len(classes),
    }


def _standardize(task):
    """Per-channel standardisation with the training set's statistics."""
    axes = tuple(range(task["x_train"].ndim - 1))
    mean = task["x_train"].mean(axis=axes)
    std = task["x_train"].std(axis=axes) + 1e-6
    for key in ("x_train", "x_val", "x_test", "x_ood"):
        task[key] = ((task[key] - mean) / std).astype("float32")
    return task


def digits(seed):
    """scikit-learn's digits: 0-7 in distribution, 8 and 9 held out."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype("float32")[..., None]
    task = _split(images, data.target, ood_classes=[8, 9], seed=seed)
    task.update(
        name="digits",
        description="sklearn digits 8x8; classes 0-7, OOD: digits 8 and 9",
        rank=2,
    )
    return task


def vowels(seed):
    """JapaneseVowels: speakers 1-7 in distribution, 8 and 9 held out."""
    folder = aeon_data_dir() / "JapaneseVowels"
    parts = [
        read_ts(folder / f"JapaneseVowels_eq_{split}.ts")
        for split in ("TRAIN", "TEST")
    ]
    x = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts]).astype(int)
    task = _split(x, labels, ood_classes=[8, 9], seed=seed)
    task.update(
        name="vowels",
        description=(
            "UCR/UEA JapaneseVowels (aeon wheel), 25 frames x 12 channels; "
            "speakers 1-7, OOD: speakers 8 and 9"
        ),
        rank=1,
    )
    return _standardize(task)


TASKS = {"digits": digits, "vowels": vowels}


# Distribution shifts of the test images --------------------------------

# Ovadia et al. 2019 rotate MNIST from 0 to 180 degrees; the same here.
ROTATIONS = tuple(range(0, 181, 15))
# Additive Gaussian noise, standard deviations in units of the pixel range
# (digits' pixels are in [0, 1] before any standardisation).
NOISE_LEVELS = (0.1, 0.25, 0.5, 1.0)


def rotate(images, degrees):
    """Images of shape `(N, H, W, C)` rotated counter-clockwise about their
    centre, by bilinear interpolation; pixels from outside are 0.

    Each output pixel reads the input at its position rotated back by
    `degrees`. Quarter turns map the pixel grid onto itself: 90 degrees is
    `np.rot90(images, 1, axes=(1, 2))` up to rounding.
    """
    images = np.asarray(images)
    _, height, width, _ = images.shape
    theta = np.deg2rad(degrees)
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    rows, cols = np.meshgrid(
        np.arange(height, dtype="float64"),
        np.arange(width, dtype="float64"),
        indexing="ij",
    )
    # Counter-clockwise on screen (rows grow downwards): the source of
    # output (r, c) is (r, c) turned clockwise by theta about the centre.
    dy, dx = rows - cy, cols - cx
    source_y = cy + np.cos(theta) * dy + np.sin(theta) * dx
    source_x = cx - np.sin(theta) * dy + np.cos(theta) * dx
    # Round-off below 1e-9 must not move a grid point to the next cell.
    source_y, source_x = np.round(source_y, 9), np.round(source_x, 9)
    y0, x0 = np.floor(source_y).astype(int), np.floor(source_x).astype(int)
    wy, wx = source_y - y0, source_x - x0
    result = np.zeros(images.shape, dtype="float64")
    for oy, ox, weight in (
        (0, 0, (1 - wy) * (1 - wx)),
        (0, 1, (1 - wy) * wx),
        (1, 0, wy * (1 - wx)),
        (1, 1, wy * wx),
    ):
        y, x = y0 + oy, x0 + ox
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        values = images[:, np.clip(y, 0, height - 1), np.clip(x, 0, width - 1)]
        result += (weight * inside)[None, :, :, None] * values
    return result.astype(images.dtype)


def add_noise(images, std, seed):
    """Images plus Gaussian noise of standard deviation `std`."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(scale=std, size=np.shape(images))
    return (images + noise).astype(np.asarray(images).dtype)


def shifted_test_sets(task, seed):
    """The test images under each shift: `{name: images}`, names
    `"rotate 15"` (degrees) and `"noise 0.25"` (standard deviation);
    `"rotate 0"` is the test split itself."""
    x = task["x_test"]
    sets = {f"rotate {angle}": rotate(x, angle) for angle in ROTATIONS}
    for index, std in enumerate(NOISE_LEVELS):
        sets[f"noise {std:g}"] = add_noise(x, std, seed=[seed, index])
    return sets
