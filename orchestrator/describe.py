"""`ltkd data describe`: what a long-tailed training set looks like, without training anything.

It shows the validation holdout (images per class held out of the balanced training pool before
the long-tailed subsample; the dataset's default unless asked otherwise) and the n_max the profile
then uses, and how the totals compare with the paper's protocol (no holdout): CIFAR-100-LT has
10,847 / 15,907 / 19,573 training images at factors 100 / 20 / 10 with n_max 500, and 9,754 /
14,315 / 17,614 with the default 50 per class held out (n_max 450).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from trainables.data.groups import class_group_ids, group_names
from trainables.data.sources import get_dataset, nominal_pool, profile_n_max, target_counts
from trainables.errors import UserError


def describe_dataset(name: str, root, imbalance_factor: float, n_groups: int = 3,
                     validation_per_class: int | None = None) -> str:
    """The counts of the long-tailed training set, its validation holdout and n_max, and its groups.

    validation_per_class: images per class held out for validation (None: the dataset's default).
    """
    from trainables.config import check_validation_per_class

    spec = get_dataset(name)
    if not imbalance_factor >= 1:
        raise UserError(f"imbalance factor must be >= 1 (1 = balanced), got {imbalance_factor}")
    check_validation_per_class(name, validation_per_class)
    holdout = spec.validation_per_class if validation_per_class is None else int(validation_per_class)
    root_path = None if root is None else Path(root)
    spec.find_root(root_path)  # layout check before reading anything
    source = (spec.read_labels or spec.read)(root_path)  # labels only: nothing is decoded
    labels, num_classes = source.train.labels, len(source.class_names)
    n_max = profile_n_max(spec, labels, num_classes, holdout)
    counts = target_counts(spec, labels, imbalance_factor, num_classes, holdout)
    class_names, test_labels = source.class_names, source.test.labels
    if not 1 <= n_groups <= num_classes:
        raise UserError(f"--groups must be between 1 and the class count {num_classes}, got {n_groups}")
    groups = np.asarray(class_group_ids(counts, n_groups))
    names = group_names(n_groups)
    pool = np.bincount(labels, minlength=num_classes)
    default = " (the default)" if holdout == spec.validation_per_class else ""
    lines = [
        f"dataset {name}: {num_classes} classes, imbalance factor {imbalance_factor:g}",
        f"training pool: {len(labels)} images ({_balance(pool)}) before the validation holdout",
        (f"validation holdout: {holdout} per class{default}, {holdout * num_classes} images (balanced, drawn "
         "from the training pool before the long-tailed subsample; never from the test set)" if holdout else
         f"validation holdout: none (validation_per_class 0{default}: the paper's protocol and counts)"),
        f"n_max used: {n_max} ({_n_max_explained(spec, pool, n_max, holdout)})",
        f"training images: {sum(counts)} (largest class {max(counts)}, smallest {min(counts)}, "
        f"measured ratio {max(counts) / max(min(counts), 1):.1f})",
    ]
    if holdout:
        paper = target_counts(spec, labels, imbalance_factor, num_classes, 0)
        lines.append(f"  the paper's protocol (validation_per_class 0) keeps {sum(paper)} training images at n_max "
                     f"{profile_n_max(spec, labels, num_classes, 0)}: the holdout shrinks n_max, so counts differ "
                     "from the paper's (CIFAR-100-LT at factors 100 / 20 / 10: 10,847 / 15,907 / 19,573 at "
                     "n_max 500, 9,754 / 14,315 / 17,614 at n_max 450)")
    lines += [
        f"test images: {len(test_labels)} (balanced: {_test_balance(test_labels, num_classes)})",
        "",
        f"{'group':<8} {'classes':>7} {'images':>8} {'share':>7}  count range",
    ]
    total = sum(counts)
    for g, gname in enumerate(names):
        members = [c for c in range(num_classes) if int(groups[c]) == g]
        images = sum(counts[c] for c in members)
        member_counts = [counts[c] for c in members]
        lines.append(f"{gname:<8} {len(members):>7} {images:>8} {images / total:>7.1%}  "
                     f"{max(member_counts)}..{min(member_counts)}")
    lines += ["", f"{'class':>5} {'name':<16} {'count':>6} {'val':>5} {'group':<7}"]
    for c in range(num_classes):
        label = class_names[c] if c < len(class_names) else str(c)
        lines.append(f"{c:>5} {label[:16]:<16} {counts[c]:>6} {holdout:>5} {names[int(groups[c])]:<7}")
    return "\n".join(lines)


def _n_max_explained(spec, pool: np.ndarray, n_max: int, holdout: int) -> str:
    """Where the profile's n_max comes from: the nominal n_max, or what a class has left after the holdout."""
    reference = int(pool.max()) if spec.cap_to_available else int(pool.min())
    which = "largest" if spec.cap_to_available else "smallest"
    if spec.n_max is not None and n_max == spec.n_max and reference - holdout > spec.n_max:
        return f"the nominal n_max; the {which} class has {reference - holdout} after the holdout"
    left = f"{reference} less the {holdout} held out" if holdout else f"{reference}, no holdout"
    note = ""
    if spec.n_max is not None and reference < nominal_pool(spec):
        note = f"; this copy has fewer than the nominal {nominal_pool(spec)} per class"
    return f"the {which} class's pool: {left}{note}"


def _balance(per_class: np.ndarray) -> str:
    if per_class.min() == per_class.max():
        return f"{per_class.min()} per class"
    return f"{per_class.min()}..{per_class.max()} per class"


def _test_balance(labels: np.ndarray, num_classes: int) -> str:
    per_class = np.bincount(labels, minlength=num_classes)
    if per_class.min() == per_class.max():
        return f"{per_class.min()} per class"
    return f"{per_class.min()}..{per_class.max()} per class"
