"""Long-tailed subsampling of a balanced training set (LDAM-DRW convention, SPEC section 3)."""
from __future__ import annotations

import math

import numpy as np


def imbalance_factor_problem(imbalance_factor, n_max: int, dataset: str | None = None,
                             held_out: int = 0) -> str | None:
    """What is wrong with `imbalance_factor` for a largest class of `n_max` images, or None.

    The text continues a subject ("imbalance factor ", "--imbalance-factor ", ...): it must be a
    finite number >= 1 and at most n_max, so that the smallest class keeps int(n_max / gamma) >= 1 images.
    `held_out`: images per class held out for validation before the profile was drawn (n_max is
    what remains); the text then says so.
    """
    if isinstance(imbalance_factor, bool) or not isinstance(imbalance_factor, (int, float)):
        return f"must be a number, got {imbalance_factor!r}"
    if not imbalance_factor >= 1:  # also NaN
        return f"must be >= 1 (1 = balanced, 100 = head class 100x the tail), got {imbalance_factor}"
    largest = int(n_max)  # int(n_max / gamma) >= 1 keeps the smallest class an image
    where = f" for {dataset}" if dataset else ""
    held = (f", {n_max + held_out} less validation_per_class = {held_out} held out for validation"
            if held_out else "")
    if not math.isfinite(imbalance_factor):
        note = f" ({n_max} training images in its largest class{held})" if held else ""
        return f"must be a finite number, got {imbalance_factor}; the largest allowed{where} is {largest}{note}"
    if imbalance_factor > largest:
        return (f"must be at most {largest}{where} (its largest class has {n_max} training images{held}, so a "
                f"factor of {imbalance_factor:g} leaves the smallest class none), got {imbalance_factor:g}")
    return None


def long_tail_counts(n_max: int, num_classes: int, imbalance_factor: float) -> list[int]:
    """Per-class image counts, class 0 largest: n_i = int(n_max * (1/gamma)^(i/(C-1))).

    CIFAR-100 (n_max 500) gives 10,847 / 15,907 / 19,573 images for factors 100 / 20 / 10.
    Every class keeps at least one image: gamma must be finite, >= 1 and at most n_max.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    problem = imbalance_factor_problem(imbalance_factor, n_max)
    if problem:
        raise ValueError(f"imbalance factor {problem}")
    if num_classes == 1:
        return [int(n_max)]
    # The floor tolerates round-off where the exact count is a whole number: n_max * (1/gamma) at
    # gamma = n_max is 1, but 49 * (1/49) evaluates to 0.9999999999999999.
    return [
        int(n_max * (1.0 / imbalance_factor) ** (i / (num_classes - 1)) + 1e-9)
        for i in range(num_classes)
    ]


def subsample_indices(
    labels: np.ndarray,
    counts: list[int],
    seed: int,
    cap_to_available: bool = False,
) -> np.ndarray:
    """Indices into `labels` keeping counts[c] images of class c, drawn with a seeded generator.

    The result is sorted, so it is a canonical record of the subsample: store it with the run
    and the long-tailed set can be rebuilt exactly. With `cap_to_available` a class with fewer
    images than asked keeps all it has (ImageNet-LT); otherwise that is an error.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    kept = []
    for cls, wanted in enumerate(counts):
        members = np.flatnonzero(labels == cls)
        if len(members) < wanted:
            if not cap_to_available:
                raise ValueError(
                    f"class {cls} has {len(members)} training images but the long-tailed profile asks for {wanted}"
                )
            wanted = len(members)
        kept.append(rng.choice(members, size=wanted, replace=False))
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


# The validation split's generator: a stream of its own, derived from the data seed, so the split
# does not shift the subsample's draws and does not depend on the imbalance factor.
VALIDATION_STREAM = 1


def validation_indices(labels: np.ndarray, per_class: int, seed: int, num_classes: int | None = None) -> np.ndarray:
    """Indices into `labels` of `per_class` images of every class, drawn with a generator seeded by `seed`.

    The balanced validation split, held out of the training pool before the long-tailed
    subsample. Sorted (a canonical record); empty when per_class is 0. Every class must have
    more than per_class images (the caller checks, naming validation_per_class).
    """
    labels = np.asarray(labels)
    if per_class == 0:
        return np.zeros(0, dtype=np.int64)
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if len(labels) else 0
    rng = np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(VALIDATION_STREAM,)))
    held = [rng.choice(np.flatnonzero(labels == cls), size=per_class, replace=False) for cls in range(num_classes)]
    return np.sort(np.concatenate(held)).astype(np.int64) if held else np.zeros(0, dtype=np.int64)
