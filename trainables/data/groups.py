"""Class groups by training frequency: Head / Medium / Tail, or n near-equal groups (SPEC section 1).

The grouping itself (`class_group_ids`, `group_sizes`, `group_names`) is plain Python, so
`ltkd data describe` and the reports use it without loading torch; `class_groups` hands the
same ids to the losses and the engine as a tensor.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

GROUP_NAMES_3 = ("head", "medium", "tail")


def class_groups(counts: Sequence[int], n_groups: int = 3) -> "torch.LongTensor":
    """`class_group_ids` as a LongTensor of length C (what the losses and the engine index with)."""
    import torch  # here, not at the top: the grouping itself is read by torch-free commands

    return torch.tensor(class_group_ids(counts, n_groups), dtype=torch.long)


def class_group_ids(counts: Sequence[int], n_groups: int = 3) -> list[int]:
    """Group id (0 = most frequent group) for every class, a list of length C.

    Classes are sorted by training count (ties keep class order). Three groups follow the
    paper: Head = top 33% of classes, Medium = next 34%, Tail = bottom 33%. Any other n splits
    the sorted classes into n contiguous groups whose sizes differ by at most one (larger
    groups first); n = C puts every class in its own group ("continuous reweighting").
    """
    num_classes = len(counts)
    if isinstance(n_groups, bool) or not isinstance(n_groups, int):
        raise ValueError(f"number of groups must be an integer, got {n_groups!r}")
    if not 1 <= n_groups <= num_classes:
        raise ValueError(
            f"number of groups must be between 1 and the class count {num_classes}, got {n_groups}"
        )
    order = sorted(range(num_classes), key=lambda c: (-counts[c], c))
    sizes = group_sizes(num_classes, n_groups)
    groups = [0] * num_classes
    start = 0
    for group_id, size in enumerate(sizes):
        for cls in order[start:start + size]:
            groups[cls] = group_id
        start += size
    return groups


def group_sizes(num_classes: int, n_groups: int) -> list[int]:
    """How many classes each group gets (most frequent group first)."""
    if n_groups == 3 and num_classes >= 3:
        head = round(num_classes * 0.33)
        tail = round(num_classes * 0.33)
        # Tiny class counts can round a group to zero; keep every group non-empty.
        head, tail = max(head, 1), max(tail, 1)
        return [head, num_classes - head - tail, tail]
    base, extra = divmod(num_classes, n_groups)
    return [base + 1 if g < extra else base for g in range(n_groups)]


def group_names(n_groups: int) -> list[str]:
    """Display names: head/medium/tail for 3 groups, g0..g{n-1} otherwise."""
    if n_groups == 3:
        return list(GROUP_NAMES_3)
    return [f"g{g}" for g in range(n_groups)]
