"""Tiny datasets written in the real on-disk formats, read back through the real loaders."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def write_cifar100(root: Path, per_class_train: int = 20, per_class_test: int = 2, num_classes: int = 100,
                   seed: int = 0) -> Path:
    """A `cifar-100-python/` folder with the real pickle layout (rows of 3072 channel-first bytes)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, per_class in (("train", per_class_train), ("test", per_class_test)):
        labels = np.repeat(np.arange(num_classes), per_class)
        rng.shuffle(labels)
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        # Encode the label into the red channel's first pixel so tests can check image/label pairing.
        data[:, 0] = labels
        batch = {b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))], b"fine_labels": labels.tolist(),
                 b"coarse_labels": (labels // 5).tolist(), b"data": data, b"batch_label": split.encode()}
        with open(folder / split, "wb") as f:
            pickle.dump(batch, f)
    meta = {b"fine_label_names": [f"class{c}".encode() for c in range(num_classes)],
            b"coarse_label_names": [f"super{c}".encode() for c in range(20)]}
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f)
    return folder


def _write_jpeg(path: Path, value: int, size: int, gray: bool = False) -> None:
    array = np.full((size, size, 3), value, dtype=np.uint8)
    image = Image.fromarray(array).convert("L") if gray else Image.fromarray(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=95)


def write_tiny_imagenet(root: Path, num_classes: int = 6, per_class_train: int = 10, per_class_val: int = 2,
                        size: int = 64) -> Path:
    """A `tiny-imagenet-200/` tree: wnids.txt, train/<wnid>/images, flat val/images + val_annotations.txt."""
    folder = root / "tiny-imagenet-200"
    wnids = [f"n{c:08d}" for c in range(num_classes)]
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for c, wnid in enumerate(wnids):
        for i in range(per_class_train):
            # The first class' first image is grayscale, as a few real TinyImageNet images are.
            _write_jpeg(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", 10 * c, size, gray=(c == 0 and i == 0))
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    lines = []
    for c, wnid in enumerate(wnids):
        for i in range(per_class_val):
            name = f"val_{c * per_class_val + i}.JPEG"
            _write_jpeg(folder / "val" / "images" / name, 10 * c, size)
            lines.append(f"{name}\t{wnid}\t0\t0\t{size - 1}\t{size - 1}")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_image_folder(root: Path, per_class_train: list[int], per_class_val: int = 2, size: int = 16) -> Path:
    """An ImageFolder root (train/<class>/*.JPEG, val/<class>/*.JPEG) with uneven class sizes."""
    for c, count in enumerate(per_class_train):
        for i in range(count):
            _write_jpeg(root / "train" / f"cls{c:03d}" / f"{i}.JPEG", 10 * c, size)
        for i in range(per_class_val):
            _write_jpeg(root / "val" / f"cls{c:03d}" / f"{i}.JPEG", 10 * c, size)
    return root
