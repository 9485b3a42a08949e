"""The names of the metrics a run produces, in one place (the engine, Tune, the store and the tables use them).

Accuracies are in %, on the balanced test set (`acc...`) and on the balanced validation split
held out of the training pool (`val_acc...`: what searches select on). Groups are the 3-group
Head / Medium / Tail split of the training counts (trainables/data/groups.py).
"""
from __future__ import annotations

GROUPS = ("head", "medium", "tail")
TEST_METRICS = ("acc",) + tuple(f"acc_{group}" for group in GROUPS)  # acc, acc_head, acc_medium, acc_tail
VALIDATION_METRICS = tuple(f"val_{name}" for name in TEST_METRICS)  # val_acc, val_acc_head, ...
ACCURACY_METRICS = TEST_METRICS + VALIDATION_METRICS
# What a search may maximise (SweepConfig.objective): a test metric name; with selection "val"
# the search maximises its validation twin (`validation_twin`).
OBJECTIVES = TEST_METRICS
# Scalars reported to Tune each epoch (lists stay in the run folder and the Parquet store).
REPORTED = ("epoch", "epochs") + ACCURACY_METRICS + ("train_loss", "lr", "epoch_seconds")
# The words tables and figures use for them.
LABELS = {"acc": "All", "acc_head": "Head", "acc_medium": "Medium", "acc_tail": "Tail",
          **{f"val_{name}": f"Validation {label}" for name, label in
             {"acc": "All", "acc_head": "Head", "acc_medium": "Medium", "acc_tail": "Tail"}.items()}}


def validation_twin(metric: str) -> str:
    """The validation split's metric of a test metric: acc_tail -> val_acc_tail."""
    return metric if metric.startswith("val_") else f"val_{metric}"
