"""Caption sentences that say how a table's gain row was produced: its comparator, its test and
its multiple-comparison correction. Pure text from the cells; no pandas, no I/O."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from results.statistics import ALPHA

NOT_SIGNIFICANT = "†"  # a gain not significant after Holm (or not tested)
TEST_CHOSEN = "‡"  # a gain whose comparator was chosen on the test set


def gain_caption(gains: Sequence[Any], proposed: str, label: Callable[[str], str]) -> str:
    """What the Δ row is: the comparator rule, the paired test, Holm over the row, the marks."""
    present = [g for g in gains if g is not None and g.mean is not None]
    tested = [g for g in present if g.p_value is not None]
    on_test = sorted({label(g.compared_to) for g in present if g.compared_on == "test"})
    text = (f"Δ: {proposed} minus its comparator, the baseline with the highest mean validation accuracy (val_acc) "
            f"over its final runs, chosen once per block and used for every column of it, never on the test "
            f"columns; two-sided paired t-test across seeds (pairs: the same seed and teacher seed, run by both), "
            f"the p shown is Holm-adjusted over the {len(tested)} tested Δ comparison{'s' if len(tested) != 1 else ''} of "
            f"the table (the CSV adds the unadjusted p); {NOT_SIGNIFICANT}: not significant at {ALPHA:g} after Holm.")
    if on_test:
        text += (f" {TEST_CHOSEN}: no validation accuracy (selection on the test set or no holdout), so the "
                 f"comparator ({', '.join(on_test)}) was chosen on the test set's overall accuracy, the data it is "
                 f"reported on: that Δ is biased against {proposed}.")
    reasons = sorted({g.no_test for g in present if g.p_value is None and g.no_test})
    if reasons:
        text += (f" No test ({'; '.join(reasons)}): fewer than two pairs, or paired differences without spread "
                 f"(no t-statistic); such a gain carries {NOT_SIGNIFICANT} too.")
    return text


def teacher_spread_text(student_seeds: Sequence[int], teacher_seeds: Sequence[int]) -> str:
    """What the spread over seeds holds: with one teacher for several student seeds, no teacher variance."""
    if len(teacher_seeds) == 1 and len(student_seeds) > 1:
        return " (one teacher: the spread is student-seed noise only)"
    if len(teacher_seeds) > 1:
        return " (each student seed its own teacher: the spread includes the teacher's)"
    return ""


def data_seed_text(data_seeds: Sequence[int]) -> str:
    """The seed(s) that drew the long-tailed subsample (and the validation holdout)."""
    if not data_seeds:
        return "data seed not recorded"
    return f"data seed{'s' if len(data_seeds) > 1 else ''} {', '.join(map(str, data_seeds))} (the long-tailed draw)"


def paper_protocol_text(holdouts: dict[str, list[int]], n_max: dict[str, int | None], selections: set,
                        dataset_label: Callable[[str], str]) -> str:
    """How our rows' protocol differs from the paper's, for a table set beside its numbers.

    `holdouts`: dataset -> validation images held out per class; `n_max`: dataset -> the paper's
    largest class; `selections`: the splits the searches selected on ("val", "test")."""
    parts = []
    for dataset in sorted(holdouts):
        for held in holdouts[dataset]:
            nominal = n_max.get(dataset)
            if held > 0 and nominal:
                parts.append(f"{dataset_label(dataset)} holds out {held} validation images per class before the "
                             f"long-tailed draw, so its largest class has {nominal - held} images, not the paper's "
                             f"{nominal} ({nominal} -> {nominal - held}), and every class count shrinks with it")
    if "val" in selections:
        parts.append("hyperparameters were selected on that validation split, where the paper tuned on the test set "
                     "(its numbers are test-selected, ours are not)")
    if "test" in selections:
        parts.append("searched rows selected on the test set, as the paper did")
    if not parts:
        return ""
    return "Protocol differences from the paper: " + "; ".join(parts) + "."


def weak_teacher_text(weak: Sequence[tuple[str, float, float]]) -> str:
    """Blocks whose teacher is below the student trained alone on validation: (block, teacher, student)."""
    if not weak:
        return ""
    listed = "; ".join(f"{block}: teacher {t:.2f} vs student alone {s:.2f}" for block, t, s in weak)
    return (f"Weak teacher: below the student trained alone on mean validation accuracy ({listed}); "
            f"distillation from such a teacher is expected to hurt, so read the Δ there with that in mind.")
