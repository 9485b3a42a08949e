"""Datasets read from the user's own folders (never downloaded), plus the embedded digits set.

Each source returns the balanced training and test sets; `load_long_tailed` then holds out the
balanced validation split and draws the long-tailed training subsample from what remains (SPEC
sections 3 and 5). Small datasets are held in memory as one uint8 array (N, H, W, 3); ImageNet
keeps file paths and is decoded lazily by the data pipeline.

Validation split and counts. `validation_per_class` images of every class (defaults: cifar100 50,
tinyimagenet 50, imagenet 20, digits 10; `DatasetSpec.validation_per_class`) are drawn from the
balanced training pool with a generator seeded by the data seed, before the long-tailed
subsample; the split never touches the test set and depends only on the dataset, the data seed and
`validation_per_class` (not on the imbalance factor), so a teacher and its students share it. The
long-tailed profile then uses n_max = min(nominal n_max, smallest class's pool - holdout) (ImageNet-LT,
which caps each class at what it has, caps it at what remains after the holdout). The counts
therefore differ from the paper's: CIFAR-100-LT has 10,847 / 15,907 / 19,573 training images at
imbalance factors 100 / 20 / 10 with n_max 500 (the paper's protocol, `validation_per_class = 0`,
which keeps exactly those counts and subsamples); with the default 50 held out per class n_max is
450 and they are 9,754 / 14,315 / 17,614, beside 5,000 validation images. TinyImageNet-LT:
21,549 / 31,711 / 39,072 at n_max 500, 19,381 / 28,531 / 35,157 at n_max 450 (+ 10,000 validation).
Digits (124 training images in its smallest class after the fixed test split): n_max 114 with the
default 10 held out per class, 278 images at factor 100 and 461 at 10 (304 and 503 without).
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainables.data.long_tail import long_tail_counts, subsample_indices
from trainables.errors import DatasetLayoutError, UserError
from trainables.registry import Registry

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


@dataclass
class ImageSet:
    """Labelled images: in memory (`images`, uint8 N x H x W x 3) or as files (`paths`)."""

    labels: np.ndarray
    images: np.ndarray | None = None
    paths: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> "ImageSet":
        indices = np.asarray(indices, dtype=np.int64)
        return ImageSet(
            labels=self.labels[indices],
            images=None if self.images is None else self.images[indices],
            paths=None if self.paths is None else [self.paths[i] for i in indices],
        )

    def materialize(self, image_size: int) -> "ImageSet":
        """Decode file-backed images into one in-memory uint8 array (for small images only)."""
        if self.images is not None or self.paths is None:
            return self
        from PIL import Image

        images = np.empty((len(self.paths), image_size, image_size, 3), dtype=np.uint8)
        for i, path in enumerate(self.paths):
            with Image.open(path) as img:
                img = img.convert("RGB")
                if img.size != (image_size, image_size):
                    img = img.resize((image_size, image_size), Image.BILINEAR)
                images[i] = np.asarray(img, dtype=np.uint8)
        return ImageSet(labels=self.labels, images=images, paths=None)


@dataclass
class BalancedSource:
    """What a dataset's reader returns: the full balanced train set, the test set, class names."""

    train: ImageSet
    test: ImageSet
    class_names: list[str]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    label: str  # as the paper's tables name it: "CIFAR-100-LT", ...
    num_classes: int
    n_max: int | None  # images of the largest class; None = derived from the data (digits)
    image_size: int
    style: str  # "cifar" (small images, tensor pipeline) or "imagenet" (files, DataLoader)
    paper_imbalance_factors: tuple[int, ...]
    layout: str  # one line: what the root folder must contain
    read: Callable[[Path | None], BalancedSource]
    find_root: Callable[[Path | None], Path | None]
    cap_to_available: bool = False  # ImageNet-LT: a class keeps at most what it has
    in_memory: bool = True
    crop_padding: int = 4  # the CIFAR augmentation: random crop of image_size after zero padding
    hflip: bool = True  # the augmentation's horizontal flip (off for digits: mirrored digits are other glyphs)
    # Images per class held out of the balanced training pool as the validation split, by default
    # (RunConfig.validation_per_class = None); 0 = none, the paper's protocol and counts.
    validation_per_class: int = 0
    # `read` without decoding images (their ImageSets hold labels alone), for commands that only
    # count (`ltkd data describe`); None: `read` is cheap enough (file lists, label arrays).
    read_labels: Callable[[Path | None], BalancedSource] | None = None
    test_per_class: int = 50  # images per class of the balanced test set (CIFAR-100: 100)


# Every dataset: a DatasetSpec registered below, next to the reader of its on-disk layout.
DATASETS: Registry[DatasetSpec] = Registry("dataset")


def get_dataset(name: str) -> DatasetSpec:
    return DATASETS.get(name)


# ---------------------------------------------------------------------------------------------
# Layout checks: accept the dataset folder itself or the folder that contains it.


def _find_folder(root: Path | None, folder_name: str, required: tuple[str, ...], dataset: str, layout: str) -> Path:
    if root is None:
        raise DatasetLayoutError(f"{dataset}: no dataset root given; pass --root DIR where DIR is {layout}")
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetLayoutError(f"{dataset}: dataset root {root} does not exist; expected {layout}")
    for candidate in (root, root / folder_name):
        if all((candidate / entry).exists() for entry in required):
            return candidate
    missing = [entry for entry in required if not (root / entry).exists()]
    raise DatasetLayoutError(
        f"{dataset}: {root} is not in the expected layout (missing {', '.join(missing)}); expected {layout}"
    )


# ---------------------------------------------------------------------------------------------
# CIFAR-100: the standard python pickles.

CIFAR_LAYOUT = "the 'cifar-100-python/' folder (pickled 'train', 'test', 'meta') or its parent"


def _cifar_root(root):
    return _find_folder(root, "cifar-100-python", ("train", "test", "meta"), "cifar100", CIFAR_LAYOUT)


# Loading a pickle runs whatever code it names, and a dataset folder may be anyone's: CIFAR pickles
# load only containers, bytes, str, numbers and numeric numpy arrays. numpy's own rebuild functions
# are never handed to the pickle (np.ndarray(shape, object, buffer=...) alone makes an object array
# over arbitrary memory): stand-ins collect their arguments, and the arrays are made here with
# np.frombuffer from raw bytes and a checked dtype.
PLAIN_DTYPE_KINDS = "biufc"  # bool, signed and unsigned integers, floats, complex numbers


class _RefusedPickle(pickle.UnpicklingError):
    pass


def _text(value):
    # Python 2 pickles (the real CIFAR files) read with encoding="bytes" give their strings as bytes.
    return value.decode("latin-1") if isinstance(value, bytes) else value


class _PickledDtype:
    """Stands in for `numpy.dtype(spec, align, copy)` and its pickled state."""

    def __init__(self, spec, align=False, copy=False):
        self.spec, self.byteorder = spec, "|"

    def __setstate__(self, state):
        # (version, byteorder, subarray, names, fields, ...): a plain dtype has no subarray and no fields.
        if not isinstance(state, tuple) or len(state) < 5 or any(part is not None for part in state[2:5]):
            raise _RefusedPickle("a structured numpy dtype")
        self.byteorder = _text(state[1])

    def resolve(self) -> np.dtype:
        spec = _text(self.spec)
        if not isinstance(spec, str) or self.byteorder not in ("<", ">", "=", "|"):
            raise _RefusedPickle(f"numpy dtype {self.spec!r}")
        dtype = np.dtype(spec).newbyteorder(self.byteorder)
        if dtype.kind not in PLAIN_DTYPE_KINDS:
            raise _RefusedPickle(f"numpy dtype {dtype}")
        return dtype


class _PickledArray:
    """Stands in for the ndarray that `_reconstruct` starts and `__setstate__` fills (pickle protocols < 5)."""

    array: np.ndarray | None = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) != 5:
            raise _RefusedPickle("an ndarray state")
        _version, shape, dtype, fortran, raw = state
        self.array = _array(raw, dtype, shape, "F" if fortran else "C")


def _reconstruct(subtype, shape, spec) -> _PickledArray:
    if subtype is not _PickledArray:
        raise _RefusedPickle("an ndarray subclass")
    return _PickledArray()


def _frombuffer(buffer, dtype, shape, order) -> np.ndarray:
    """How pickle protocol 5 rebuilds an array."""
    return _array(buffer, dtype, shape, order)


def _array(raw, dtype, shape, order) -> np.ndarray:
    if not isinstance(dtype, _PickledDtype):
        raise _RefusedPickle("an ndarray without a numpy dtype")
    plain = dtype.resolve()
    if not isinstance(raw, (bytes, bytearray)):
        raise _RefusedPickle(f"an ndarray of {plain} not stored as raw bytes")
    return np.frombuffer(raw, plain).reshape(shape, order=order)


def _latin1_bytes(text, encoding) -> bytes:
    """How Python 3 writes bytes at pickle protocols < 3: `_codecs.encode(text, "latin1")`."""
    if not isinstance(text, str) or encoding != "latin1":
        raise _RefusedPickle("_codecs.encode of something other than bytes")
    return text.encode("latin-1")


# numpy >= 2 names its modules numpy._core, older ones (and the real CIFAR files) numpy.core.
_PICKLE_GLOBALS = {
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _PickledArray,
    ("numpy", "dtype"): _PickledDtype,
}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedPickle(f"{module}.{name}") from None


def _unwrap(value):
    """`value` with every array stand-in replaced by its array."""
    if isinstance(value, _PickledArray):
        if value.array is None:
            raise _RefusedPickle("an ndarray without data")
        return value.array
    if isinstance(value, dict):
        return {key: _unwrap(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(item) for item in value)
    return value


def _read_cifar_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return _unwrap(_PlainUnpickler(f, encoding="bytes").load())
    except _RefusedPickle as exc:
        raise DatasetLayoutError(f"cifar100: {path} holds objects other than plain data ({exc}) and was refused "
                                 f"(loading it could run code); expected {CIFAR_LAYOUT}") from None
    except Exception as exc:  # truncated or foreign file
        raise DatasetLayoutError(f"cifar100: cannot read {path} as a CIFAR pickle ({exc}); expected {CIFAR_LAYOUT}") from None


def _cifar_split(path: Path) -> ImageSet:
    batch = _read_cifar_pickle(path)
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(batch[b"fine_labels"], dtype=np.int64)
    except (KeyError, ValueError) as exc:
        raise DatasetLayoutError(f"cifar100: {path} lacks CIFAR-100 fields ({exc}); expected {CIFAR_LAYOUT}") from None
    return ImageSet(labels=labels, images=np.ascontiguousarray(data))


def _read_cifar(root) -> BalancedSource:
    folder = _cifar_root(root)
    meta = _read_cifar_pickle(folder / "meta")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(b"fine_label_names", [])]
    train, test = _cifar_split(folder / "train"), _cifar_split(folder / "test")
    if not names:
        names = [str(c) for c in range(int(train.labels.max()) + 1)]
    return BalancedSource(train=train, test=test, class_names=names)


DATASETS.add(DatasetSpec(
    name="cifar100", label="CIFAR-100-LT", test_per_class=100, num_classes=100, n_max=500, image_size=32, style="cifar",
    paper_imbalance_factors=(10, 20, 100), layout=CIFAR_LAYOUT, read=_read_cifar, find_root=_cifar_root,
    validation_per_class=50,
))


# ---------------------------------------------------------------------------------------------
# TinyImageNet: train/<wnid>/images/*.JPEG, val/images + val/val_annotations.txt.

TINY_LAYOUT = (
    "the 'tiny-imagenet-200/' folder (wnids.txt, train/<wnid>/images/*.JPEG, "
    "val/images/*.JPEG with val/val_annotations.txt) or its parent"
)


def _tiny_root(root):
    return _find_folder(root, "tiny-imagenet-200", ("wnids.txt", "train", "val/images", "val/val_annotations.txt"),
                        "tinyimagenet", TINY_LAYOUT)


def _image_files(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(str(folder / e.name) for e in os.scandir(folder) if e.name.lower().endswith(IMAGE_EXTENSIONS))


def _read_tiny(root) -> BalancedSource:
    folder = _tiny_root(root)
    wnids = [line.strip() for line in (folder / "wnids.txt").read_text().splitlines() if line.strip()]
    index = {wnid: i for i, wnid in enumerate(wnids)}
    paths, labels = [], []
    for wnid in wnids:
        files = _image_files(folder / "train" / wnid / "images")
        if not files:
            raise DatasetLayoutError(f"tinyimagenet: no images in {folder / 'train' / wnid / 'images'}; expected {TINY_LAYOUT}")
        paths += files
        labels += [index[wnid]] * len(files)
    val_paths, val_labels = [], []
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        if fields[1] not in index:
            raise DatasetLayoutError(f"tinyimagenet: val_annotations.txt names class {fields[1]} that is not in wnids.txt")
        val_paths.append(str(folder / "val" / "images" / fields[0]))
        val_labels.append(index[fields[1]])
    train = ImageSet(labels=np.asarray(labels, dtype=np.int64), paths=paths)
    test = ImageSet(labels=np.asarray(val_labels, dtype=np.int64), paths=val_paths)
    return BalancedSource(train=train, test=test, class_names=wnids)


DATASETS.add(DatasetSpec(
    name="tinyimagenet", label="TinyImageNet-LT", num_classes=200, n_max=500, image_size=64, style="cifar",
    paper_imbalance_factors=(10, 20, 100), layout=TINY_LAYOUT, read=_read_tiny, find_root=_tiny_root,
    validation_per_class=50,
))


# ---------------------------------------------------------------------------------------------
# ImageNet: ImageFolder train/<class>/*, val/<class>/*.

IMAGENET_LAYOUT = "an ImageFolder root with train/<class>/*.JPEG and val/<class>/*.JPEG (same class folders)"


def _imagenet_root(root):
    return _find_folder(root, "imagenet", ("train", "val"), "imagenet", IMAGENET_LAYOUT)


def _read_image_folder(folder: Path) -> tuple[list[str], list[str], list[int]]:
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    paths, labels = [], []
    for i, cls in enumerate(classes):
        files = _image_files(folder / cls)
        paths += files
        labels += [i] * len(files)
    return classes, paths, labels


def _read_imagenet(root) -> BalancedSource:
    folder = _imagenet_root(root)
    classes, paths, labels = _read_image_folder(folder / "train")
    val_classes, val_paths, val_labels = _read_image_folder(folder / "val")
    if not classes:
        raise DatasetLayoutError(f"imagenet: {folder / 'train'} has no class folders; expected {IMAGENET_LAYOUT}")
    if val_classes != classes:
        raise DatasetLayoutError(
            f"imagenet: {folder / 'val'} has {len(val_classes)} class folders but train/ has {len(classes)} "
            f"(or their names differ); expected {IMAGENET_LAYOUT}"
        )
    train = ImageSet(labels=np.asarray(labels, dtype=np.int64), paths=paths)
    test = ImageSet(labels=np.asarray(val_labels, dtype=np.int64), paths=val_paths)
    return BalancedSource(train=train, test=test, class_names=classes)


DATASETS.add(DatasetSpec(
    name="imagenet", label="ImageNet-LT", num_classes=1000, n_max=1300, image_size=224, style="imagenet",
    paper_imbalance_factors=(5, 10, 20), layout=IMAGENET_LAYOUT, read=_read_imagenet, find_root=_imagenet_root,
    cap_to_available=True, in_memory=False, validation_per_class=20,
))


# ---------------------------------------------------------------------------------------------
# Digits: scikit-learn's bundled 8x8 handwritten digits, the embedded default. A fixed balanced
# test split (DIGITS_TEST_PER_CLASS per class, drawn with a seed of its own so it never depends
# on the run's seed); images upsampled to 16x16 RGB for the CIFAR-style models (they pool
# adaptively), cropped with 2 pixels of padding: the same share of the image as CIFAR's 4 of 32,
# at a quarter of the compute of 32x32, so the quickstart sweep runs in minutes on a CPU. Never
# flipped: a mirrored 2, 3, 4, 5, 6, 7 or 9 is no digit (DatasetSpec.hflip).
# The validation split (10 per class by default) is held out of the training pool, not of the test split.
DIGITS_SIZE = 16

DIGITS_TEST_PER_CLASS = 50
DIGITS_SPLIT_SEED = 20240601
# Training images of the rarest digit (8: 174 in scikit-learn's set) after the test split: the
# n_max that target_counts derives from the data without a validation holdout, known here so
# configs are checked without loading it.
DIGITS_N_MAX = 174 - DIGITS_TEST_PER_CLASS


def _digits_root(root):
    return None  # embedded: the root is ignored


def _upscaled_digits(images: np.ndarray) -> np.ndarray:
    """scikit-learn's 8x8 digits (values 0-16) as DIGITS_SIZE RGB uint8 images (bilinear, torch's)."""
    import torch
    import torch.nn.functional as F

    raw = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    big = F.interpolate(raw, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False).clamp(0, 1)
    images = (big * 255).round().to(torch.uint8).squeeze(1).numpy()
    return np.ascontiguousarray(np.repeat(images[..., None], 3, axis=-1))


def _read_digits(root, with_images: bool = True) -> BalancedSource:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = _upscaled_digits(bunch.images) if with_images else None
    labels = bunch.target.astype(np.int64)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    test_idx = np.sort(np.concatenate([
        rng.choice(np.flatnonzero(labels == c), DIGITS_TEST_PER_CLASS, replace=False) for c in range(10)
    ]))
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[test_idx] = False
    full = ImageSet(labels=labels, images=images)
    return BalancedSource(train=full.subset(np.flatnonzero(train_mask)), test=full.subset(test_idx),
                          class_names=[str(c) for c in range(10)])


DATASETS.add(DatasetSpec(
    name="digits", label="Digits-LT", num_classes=10, n_max=None, image_size=DIGITS_SIZE, style="cifar", crop_padding=2, hflip=False,
    paper_imbalance_factors=(10, 100), layout="nothing: digits ships with scikit-learn (--root is ignored)",
    read=_read_digits, find_root=_digits_root, validation_per_class=10,
    read_labels=lambda root: _read_digits(root, with_images=False),
))


# ---------------------------------------------------------------------------------------------


@dataclass
class LongTailedData:
    """A long-tailed training set, the balanced validation and test sets, and the record to rebuild them."""

    dataset: str
    imbalance_factor: float
    seed: int
    counts: list[int]  # images per class actually kept, class 0 largest
    train_indices: np.ndarray  # indices into the balanced training pool (sorted): the audit record
    train: ImageSet
    test: ImageSet
    class_names: list[str]
    spec: DatasetSpec = field(repr=False)
    # The validation split: validation_per_class images of every class, held out of the balanced
    # training pool before the subsample (empty when validation_per_class is 0).
    val: ImageSet = field(default_factory=lambda: ImageSet(labels=np.zeros(0, dtype=np.int64)), repr=False)
    val_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # into the pool, sorted
    validation_per_class: int = 0
    n_max: int = 0  # the long-tailed profile's largest class, after the holdout

    @property
    def num_classes(self) -> int:
        return len(self.counts)


def default_validation_per_class(name: str) -> int:
    """The dataset's default validation holdout per class (what RunConfig's None resolves to)."""
    return get_dataset(name).validation_per_class


def _check_validation_value(value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise UserError(f"validation_per_class must be an integer >= 0 (0 = no validation split), got {value!r}")


def profile_n_max(spec: DatasetSpec, source_train_labels: np.ndarray, num_classes: int | None = None,
                  validation_per_class: int = 0) -> int:
    """The n_max of the long-tailed profile drawn from this pool after holding out `validation_per_class`.

    n_max is the dataset's nominal largest class (500 for CIFAR-100 and TinyImageNet, 1300 for
    ImageNet), lowered to what every class has left after the holdout for balanced sources (a
    partial copy, or the digits set), so the profile can always be drawn. ImageNet-LT instead caps
    each class at what it has left (SPEC section 3), so its n_max is capped by its largest class.
    A holdout that leaves some class no training image is a UserError naming validation_per_class,
    the dataset and the largest allowed value.
    """
    _check_validation_value(validation_per_class)
    if num_classes is None:
        num_classes = int(source_train_labels.max()) + 1 if len(source_train_labels) else 0
    pool = np.bincount(source_train_labels, minlength=num_classes)
    empty = [c for c in range(num_classes) if pool[c] == 0]
    if empty:
        raise DatasetLayoutError(f"{spec.name}: classes {empty[:5]} have no training images; expected {spec.layout}")
    smallest = int(pool.min())
    if smallest - validation_per_class < 1:
        rare = int(pool.argmin())
        raise UserError(
            f"validation_per_class {validation_per_class} leaves {spec.name} class {rare} with no training image "
            f"(it has {smallest} in the training pool); the largest allowed for this copy of {spec.name} "
            f"is {smallest - 1}")
    available = pool - validation_per_class
    if spec.cap_to_available:
        return min(spec.n_max, int(available.max()))
    return int(available.min()) if spec.n_max is None else min(spec.n_max, int(available.min()))


def target_counts(spec: DatasetSpec, source_train_labels: np.ndarray, imbalance_factor: float,
                  num_classes: int | None = None, validation_per_class: int = 0) -> list[int]:
    """Per-class counts the long-tailed profile asks for (class 0 largest), after the validation holdout.

    n_max: see `profile_n_max`. ImageNet-LT caps each class at what it has left after the holdout.
    An imbalance factor that leaves the smallest class no image is a UserError.
    """
    from trainables.data.long_tail import imbalance_factor_problem

    if num_classes is None:
        num_classes = int(source_train_labels.max()) + 1 if len(source_train_labels) else 0
    n_max = profile_n_max(spec, source_train_labels, num_classes, validation_per_class)
    problem = imbalance_factor_problem(imbalance_factor, n_max, spec.name, held_out=validation_per_class)
    if problem:
        raise UserError(f"imbalance factor {problem}")
    counts = long_tail_counts(n_max, num_classes, imbalance_factor)
    if spec.cap_to_available:
        available = np.bincount(source_train_labels, minlength=num_classes) - validation_per_class
        return [min(c, int(a)) for c, a in zip(counts, available)]
    return counts


def nominal_pool(spec: DatasetSpec) -> int:
    """Training images per class of a complete copy's pool before any holdout (the largest class for ImageNet)."""
    return DIGITS_N_MAX if spec.name == "digits" else int(spec.n_max)


# ImageNet-1k's classes hold 732 to 1300 training images: a holdout must leave the smallest one an image.
SMALLEST_CLASS = {"imagenet": 732}


def nominal_smallest_class(spec: DatasetSpec) -> int:
    """Training images of the smallest class of a complete copy's pool, before any holdout."""
    return SMALLEST_CLASS.get(spec.name, nominal_pool(spec))


def nominal_n_max(spec: DatasetSpec, validation_per_class: int = 0) -> int:
    """Images of the largest class of the long-tailed profile of a complete copy of the dataset,
    after holding out `validation_per_class` images per class (0: none, the paper's n_max).

    It bounds the imbalance factor: int(n_max / factor) >= 1 keeps an image in the smallest class.
    """
    return nominal_pool(spec) - int(validation_per_class)


def validation_per_class_problem(name: str, value) -> str | None:
    """What is wrong with `value` as validation_per_class for a complete copy of `name`, or None.

    The text continues a subject ("validation_per_class ", "--validation-per-class "): an integer
    >= 0 that leaves every class at least one training image.
    """
    spec = get_dataset(name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        return f"must be an integer >= 0 (0 = no validation split), got {value!r}"
    smallest = nominal_smallest_class(spec)
    if not 0 <= value <= smallest - 1:
        return (f"must be between 0 and {smallest - 1} for {name} (validation_per_class images of every class are "
                f"held out for validation; its smallest class has {smallest} training images and must keep "
                f"one for training), got {value}")
    return None


def check_root(name: str, root: str | Path | None) -> None:
    """Fail fast, before any work, when the dataset root is missing or in the wrong layout."""
    get_dataset(name).find_root(None if root is None else Path(root))


def _recorded(indices, what: str, name: str, pool_size: int) -> np.ndarray:
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= pool_size):
        raise UserError(f"{name}: recorded {what} indices do not fit this copy of the dataset "
                        f"({pool_size} training images); is --root the same dataset?")
    return indices


def load_long_tailed(
    name: str,
    root: str | Path | None,
    imbalance_factor: float,
    seed: int = 0,
    train_indices: np.ndarray | None = None,
    validation_per_class: int = 0,
    val_indices: np.ndarray | None = None,
) -> LongTailedData:
    """Read a dataset, hold out its validation split and draw its long-tailed training subsample.

    validation_per_class: images per class held out of the balanced training pool before the
        subsample, drawn with a generator seeded by `seed` (0, the default here: no split and the
        paper's counts; a run passes its resolved RunConfig.validation_per_class, whose default is
        the dataset's, `DatasetSpec.validation_per_class`).
    With `train_indices` / `val_indices` (a recorded subsample and split) the same images are kept
    again instead of drawing: that is how a checkpoint rebuilds exactly the data it was trained on.
    """
    from trainables.data.long_tail import validation_indices

    spec = get_dataset(name)
    if not imbalance_factor >= 1:
        raise UserError(f"imbalance factor must be >= 1 (1 = balanced), got {imbalance_factor}")
    _check_validation_value(validation_per_class)
    validation_per_class = int(validation_per_class)
    source = spec.read(None if root is None else Path(root))
    num_classes = len(source.class_names)
    labels = source.train.labels
    n_max = profile_n_max(spec, labels, num_classes, validation_per_class)
    counts = target_counts(spec, labels, imbalance_factor, num_classes, validation_per_class)
    if val_indices is None:
        val_indices = validation_indices(labels, validation_per_class, seed, num_classes)
    else:
        val_indices = _recorded(val_indices, "validation", name, len(source.train))
        per_class = np.bincount(labels[val_indices], minlength=num_classes)
        if len(np.unique(val_indices)) != len(val_indices) or not (per_class == validation_per_class).all():
            raise UserError(f"{name}: the recorded validation indices are not {validation_per_class} distinct "
                            "images per class of this copy of the dataset; is --root the same dataset?")
    if train_indices is None:
        pool_labels = labels.copy()
        pool_labels[val_indices] = -1  # held out: never in the subsample
        train_indices = subsample_indices(pool_labels, counts, seed, cap_to_available=spec.cap_to_available)
    else:
        train_indices = _recorded(train_indices, "training", name, len(source.train))
        if len(np.intersect1d(train_indices, val_indices)):
            raise UserError(f"{name}: the recorded training and validation indices overlap; "
                            "the checkpoint is damaged or from another version")
    train = source.train.subset(train_indices)
    val = source.train.subset(val_indices)
    test = source.test
    if spec.in_memory:
        train = train.materialize(spec.image_size)
        val = val.materialize(spec.image_size)
        test = test.materialize(spec.image_size)
    kept = np.bincount(train.labels, minlength=len(counts)).tolist()
    return LongTailedData(
        dataset=name, imbalance_factor=float(imbalance_factor), seed=seed, counts=kept,
        train_indices=train_indices, train=train, test=test, class_names=source.class_names, spec=spec,
        val=val, val_indices=val_indices, validation_per_class=validation_per_class, n_max=n_max,
    )
