"""`ltkd data describe`: what a long-tailed training set looks like, without training anything."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from trainables.data.groups import class_groups, group_names
from trainables.data.sources import get_dataset, target_counts
from trainables.errors import UserError


def describe_dataset(name: str, root, imbalance_factor: float, n_groups: int = 3) -> str:
    spec = get_dataset(name)
    if not imbalance_factor >= 1:
        raise UserError(f"imbalance factor must be >= 1 (1 = balanced), got {imbalance_factor}")
    root_path = None if root is None else Path(root)
    spec.find_root(root_path)  # layout check before reading anything
    source = spec.read(root_path)  # file-backed datasets are listed, never decoded
    counts = target_counts(spec, source.train.labels, imbalance_factor, len(source.class_names))
    class_names, test_labels = source.class_names, source.test.labels
    num_classes = len(counts)
    if not 1 <= n_groups <= num_classes:
        raise UserError(f"--groups must be between 1 and the class count {num_classes}, got {n_groups}")
    groups = class_groups(counts, n_groups)
    names = group_names(n_groups)
    lines = [
        f"dataset {name}: {num_classes} classes, imbalance factor {imbalance_factor:g}",
        f"training images: {sum(counts)} (largest class {max(counts)}, smallest {min(counts)}, "
        f"measured ratio {max(counts) / max(min(counts), 1):.1f})",
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
    lines += ["", f"{'class':>5} {'name':<16} {'count':>6} {'group':<7}"]
    for c in range(num_classes):
        label = class_names[c] if c < len(class_names) else str(c)
        lines.append(f"{c:>5} {label[:16]:<16} {counts[c]:>6} {names[int(groups[c])]:<7}")
    return "\n".join(lines)


def _test_balance(labels: np.ndarray, num_classes: int) -> str:
    per_class = np.bincount(labels, minlength=num_classes)
    if per_class.min() == per_class.max():
        return f"{per_class.min()} per class"
    return f"{per_class.min()}..{per_class.max()} per class"
