"""Long-tailed subsampling of a balanced training set (LDAM-DRW convention, SPEC section 3)."""
from __future__ import annotations

import numpy as np


def long_tail_counts(n_max: int, num_classes: int, imbalance_factor: float) -> list[int]:
    """Per-class image counts, class 0 largest: n_i = int(n_max * (1/gamma)^(i/(C-1))).

    CIFAR-100 (n_max 500) gives 10,847 / 15,907 / 19,573 images for factors 100 / 20 / 10.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    if not imbalance_factor >= 1:
        raise ValueError(
            f"imbalance factor must be >= 1 (1 = balanced, 100 = head class 100x the tail), got {imbalance_factor}"
        )
    if num_classes == 1:
        return [int(n_max)]
    return [
        int(n_max * (1.0 / imbalance_factor) ** (i / (num_classes - 1)))
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
