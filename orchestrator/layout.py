"""Where a sweep keeps everything, in one place. Nothing else spells these names.

    <storage>/teachers/<name>/             teacher runs, beside the sweeps (later sweeps reuse them)
    <storage>/<sweep>/sweep.json           the sweep's config (what `ltkd resume` continues)
    <storage>/<sweep>/plan.json            what the last driver planned (`ltkd status` reads it)
    <storage>/<sweep>/driver.lock          the driver's lease (trainables/locks.py)
    <storage>/<sweep>/optuna.journal       every cell's Optuna study
    <storage>/<sweep>/runs/<cell>/<name>/  student run folders (trainables/run_files.py)
    <storage>/<sweep>/results/             one Parquet file per trial (results/store.py)
    <storage>/<sweep>/ray/                 Ray Tune's state, written by older versions: never read now
                                           (Tune's state is in the driver's private scratch folder)

`storage` is a folder every node reaches or an object-store URI (trainables/storage.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from results.store import RESULTS_DIR
from trainables.storage import Location

SWEEP_FILE = "sweep.json"
PLAN_FILE = "plan.json"
LOCK_FILE = "driver.lock"
JOURNAL_FILE = "optuna.journal"
RUNS_DIR = "runs"
RAY_DIR = "ray"  # older versions' Tune state; named so that tests can plant files there
TEACHERS_DIR = "teachers"


@dataclass(frozen=True)
class SweepLayout:
    """The paths of one sweep: `storage / name`, and the teachers' folder beside it."""

    storage: Location
    name: str

    @classmethod
    def of(cls, storage: str | Location, name: str) -> "SweepLayout":
        return cls(storage if isinstance(storage, Location) else Location.parse(storage), name)

    @property
    def folder(self) -> Location:
        return self.storage / self.name

    @property
    def sweep_file(self) -> Location:
        return self.folder / SWEEP_FILE

    @property
    def plan_file(self) -> Location:
        return self.folder / PLAN_FILE

    @property
    def driver_lock(self) -> Location:
        return self.folder / LOCK_FILE

    @property
    def journal(self) -> Location:
        return self.folder / JOURNAL_FILE

    @property
    def results(self) -> Location:
        return self.folder / RESULTS_DIR

    @property
    def runs(self) -> Location:
        return self.folder / RUNS_DIR

    def teacher_dir(self, name: str) -> Location:
        return self.storage / TEACHERS_DIR / name

    def student_dir(self, cell: str, name: str) -> Location:
        return self.runs / cell / name
