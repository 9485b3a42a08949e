"""The live progress view's time-left estimate, replayed against known timelines."""
from __future__ import annotations

import heapq
import io
import re
from types import SimpleNamespace

import pytest

from orchestrator.tune_glue import Progress


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def replay(durations: list[float], slots: int) -> list[tuple[float, float | None]]:
    """Run trials of these durations on `slots` parallel slots (in order, each starting as a slot frees);
    return (true seconds left, the estimate its console line shows) at every trial's end but the last."""
    clock, out = Clock(), io.StringIO()
    progress = Progress("teachers", len(durations), "val_acc", stream=out, clock=clock)
    start = clock.now
    queue = list(enumerate(durations))
    ends: list[tuple[float, int]] = []
    trials = {i: SimpleNamespace(trial_id=f"t{i}", config={"trial": {"cell": f"cell{i}"}}) for i in range(len(durations))}
    while len(ends) < slots and queue:
        i, d = queue.pop(0)
        progress.on_trial_start(0, [], trials[i])
        heapq.heappush(ends, (clock.now + d, i))
    finish = start + _makespan(durations, slots)
    seen = []
    while ends:
        clock.now, i = heapq.heappop(ends)
        progress.on_trial_result(0, [], trials[i], {"epoch": 1, "epochs": 1, "val_acc": 50.0})
        progress.on_trial_complete(0, [], trials[i])
        if ends or queue:  # what the line printed for this trial's end says (before Tune starts the next)
            seen.append((finish - clock.now, progress.eta_seconds()))
        if queue:  # the freed slot takes the next trial
            j, d = queue.pop(0)
            progress.on_trial_start(0, [], trials[j])
            heapq.heappush(ends, (clock.now + d, j))
    assert re.search(r"\d\d:\d\d:\d\d +completed: cell0", out.getvalue())  # console lines carry the time
    return seen


def _makespan(durations, slots):
    free = [0.0] * slots
    for d in durations:
        t = heapq.heappop(free)
        heapq.heappush(free, t + d)
    return max(free)


@pytest.mark.parametrize("n,slots", [(4, 1), (4, 2), (4, 4), (12, 3), (24, 2)])
def test_time_left_is_exact_for_equal_trials(n, slots):
    for truth, estimate in replay([60.0] * n, slots):
        assert estimate == pytest.approx(truth, abs=1.0)


def test_the_first_teacher_ending_does_not_inflate_the_estimate():
    """The reported case: 4 teachers on 2 slots, the first ends; the old estimate divided by the one
    trial still running (after removing the finished one) and said twice the truth or more."""
    durations = [55.0, 65.0, 60.0, 62.0]
    [(truth, estimate), *_] = replay(durations, 2)
    assert estimate == pytest.approx(truth, rel=0.25)


def test_time_left_stays_close_for_uneven_trials():
    """Durations from 40 to 85 s in a fixed shuffled order, 3 slots: the estimate at every trial's end
    (the future durations unknown to it) against the truth."""
    durations = [40.0, 80.0, 55.0, 70.0, 65.0, 50.0, 75.0, 60.0, 45.0, 85.0, 58.0, 72.0]
    errors = [abs(estimate - truth) / truth for truth, estimate in replay(durations, 3) if truth > 30]
    assert sum(errors) / len(errors) < 0.25 and max(errors) < 0.6


def test_the_scheduler_starts_the_newest_waiting_trial():
    """A finished trial's worker goes to the newest pending trial (no worker process started for it yet),
    not to an older one whose worker is starting (Tune would stop that start)."""
    from ray.tune.experiment import Trial

    from orchestrator.tune_glue import SearchTrialsASHA, SweepScheduler, newest_waiting

    trials = [Trial("ltkd_trial", config={}, trial_id=f"t{i}", stub=True) for i in range(5)]
    for trial, status in zip(trials, [Trial.TERMINATED, Trial.PENDING, Trial.RUNNING, Trial.PENDING, Trial.PAUSED]):
        trial.set_status(status)
    assert newest_waiting(trials) is trials[3]
    trials[3].set_status(Trial.RUNNING)
    assert newest_waiting(trials) is trials[1]
    trials[1].set_status(Trial.RUNNING)
    assert newest_waiting(trials) is trials[4]  # paused ones after every pending one
    trials[4].set_status(Trial.TERMINATED)
    assert newest_waiting(trials) is None

    class Controller:  # what a scheduler reads of Tune's controller here
        def get_trials(self):
            return trials

    trials[0].set_status(Trial.PENDING)
    for scheduler in (SweepScheduler(), SearchTrialsASHA(time_attr="epoch", max_t=4)):
        assert scheduler.choose_trial_to_run(Controller()) is trials[0]
