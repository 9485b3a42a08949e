"""`ltkd plan`'s estimate: a GPU config priced at a GPU kind's rate (orchestrator/device_rates.py), in
GPU-hours, naming the rate and its source; `--device-kind` picks the kind, `cpu` times this machine."""
from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from orchestrator import device_rates, dry_run
from orchestrator.cli import main as ltkd_main
from orchestrator.device_rates import CPU_KIND, DEFAULT_GPU_KIND, EFFICIENCY, RATES, DeviceRate
from orchestrator.sweep_cli import config_path
from orchestrator.sweep_config import load_config
from tests.dataset_builders import write_cifar100
from tests.test_layering import loaded_by

GPU_LINE = re.compile(r"^estimate: ([\d.]+) GPU-hours of training \((\d+) runs from the models' MACs at ([\d.]+) "
                      r"TMAC/s for ([a-z0-9-]+): (.+?); a rough guide", re.M)
CPU_LINE = re.compile(r"^estimate: ([\d.]+) device-hours of training on one device \((\d+) runs from the models' "
                      r"MACs at ([\d.]+) GMAC/s measured on this machine's cpu", re.M)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    """A CIFAR-100 folder in the real layout (the plan reads no image, but `--root` names a real copy)."""
    root = tmp_path_factory.mktemp("data")
    write_cifar100(root, per_class_train=2, per_class_test=1)
    return root


def plan(capsys, root, tmp_path, *extra: str, config: str = "paper:table1") -> tuple[int, str, str]:
    rc = ltkd_main(["plan", config, "--root", str(root), "--storage", str(tmp_path / "store"), *extra])
    captured = capsys.readouterr()
    assert not (tmp_path / "store").exists()  # the plan writes nothing
    return rc, captured.out, captured.err


@pytest.fixture
def no_timing(monkeypatch):
    """Pricing at a GPU kind times nothing on this machine: the CPU measurement fails if it is called."""
    def refuse(*args, **kwargs):
        raise AssertionError("a GPU kind was priced by timing this machine")

    monkeypatch.setattr(dry_run, "measured_rate", refuse)


# ------------------------------------------------------------------------------------ the table


def test_the_kind_table_is_well_formed():
    assert {"h200", "h100", "a100", "l4", "v100", "t4"} <= set(RATES)
    assert DEFAULT_GPU_KIND in RATES and CPU_KIND not in RATES
    assert device_rates.known_kinds() == [*RATES, CPU_KIND]
    assert 0 < EFFICIENCY <= 0.1  # small CIFAR convnets reach a few percent of peak at best
    for kind, spec in RATES.items():
        assert kind == spec.kind and kind == kind.lower() and re.fullmatch(r"[a-z0-9-]+", kind), kind
        assert spec.card.startswith("NVIDIA ") and "datasheet" in spec.peak_source, kind
        assert spec.precision == ("fp16" if kind in ("v100", "t4") else "bf16"), kind  # no bf16 before Ampere
        assert 10 <= spec.peak_tflops <= 5000, kind  # dense TFLOP/s, not MAC/s nor FLOP/s
        assert math.isfinite(spec.macs_per_second) and spec.macs_per_second > 0, kind
        if spec.measured is None:
            assert spec.macs_per_second == pytest.approx(spec.peak_tflops * 1e12 / 2 * EFFICIENCY), kind
            assert re.fullmatch(rf"public {spec.precision} peak x \d+(\.\d+)?% efficiency", spec.source), kind
            assert f"{EFFICIENCY * 100:g}%" in spec.source
        else:
            assert re.fullmatch(r"measured by benchmarks/gpu_check\.py on .+", spec.source), kind
    # The same chip, the same peak; PCIe below SXM; Hopper above Ampere above the rest.
    assert RATES["h100"].peak_tflops == RATES["h200"].peak_tflops > RATES["h100-pcie"].peak_tflops
    peaks = [RATES[kind].peak_tflops for kind in ("h100-pcie", "a100", "l4", "t4")]
    assert peaks == sorted(peaks, reverse=True) and len(set(peaks)) == len(peaks)


def test_a_measured_rate_replaces_the_public_peak():
    spec = DeviceRate("h100", "NVIDIA H100 SXM", "bf16", 989.0, "datasheet", measured=(2.5e13, "NVIDIA H100 80GB HBM3"))
    assert spec.macs_per_second == 2.5e13
    assert spec.source == "measured by benchmarks/gpu_check.py on NVIDIA H100 80GB HBM3"


@pytest.mark.parametrize("text,expected", [(None, None), ("h100", "h100"), ("A100", "a100"), (" cpu ", "cpu")])
def test_kinds_are_read_case_blind(text, expected):
    assert device_rates.check_kind(text) == expected


# ------------------------------------------------------------------------------------ ltkd plan


def test_table1_is_priced_in_gpu_hours_at_the_h100_rate_by_default(capsys, tmp_path, fake_root, no_timing):
    rc, out, _ = plan(capsys, fake_root, tmp_path)
    assert rc == 0
    match = GPU_LINE.search(out)
    assert match, out
    hours, runs, tmacs, kind, source = match.groups()
    # 36 teachers (4 architectures x 3 factors x 3 teacher seeds, the default = seeds) + 1,200 search + 216 final
    assert kind == "h100" and int(runs) == 1452
    assert float(tmacs) == pytest.approx(RATES["h100"].macs_per_second / 1e12, rel=1e-2)
    assert source == f"public bf16 peak x {EFFICIENCY * 100:g}% efficiency"
    # Table 1 (1,452 runs of 240 epochs of CIFAR-100-LT) is tens to a few hundred H100-hours, not 1e5.
    assert 10 <= float(hours) <= 500, out
    line = match.string[match.start():].splitlines()[0]
    assert "GPU-hours = MACs / rate" in line and "each trial holds 0.25 GPUs: 4 trials share each GPU" in line
    assert "h100 is the default for a GPU config" in line
    assert "device-hours" not in out


def test_another_kind_changes_the_rate(capsys, tmp_path, fake_root, no_timing):
    estimates = {}
    for kind in ("h100", "a100"):
        rc, out, _ = plan(capsys, fake_root, tmp_path, "--device-kind", kind)
        assert rc == 0
        hours, _, tmacs, named, source = GPU_LINE.search(out).groups()
        assert named == kind and source.startswith("public bf16 peak")
        assert "is the default" not in out  # asked for, not defaulted
        estimates[kind] = float(hours), float(tmacs)
    assert estimates["a100"][1] < estimates["h100"][1]
    # Same MACs, another rate: the hours scale by the ratio of the rates.
    assert estimates["a100"][0] / estimates["h100"][0] == pytest.approx(
        RATES["h100"].macs_per_second / RATES["a100"].macs_per_second, rel=1e-2)


def test_cpu_kind_times_this_machine(capsys, tmp_path, fake_root, monkeypatch):
    calls = []

    def fake_rate(device_name="cpu"):
        calls.append(device_name)
        return 5.6e9, "cpu"

    monkeypatch.setattr(dry_run, "measured_rate", fake_rate)
    rc, out, _ = plan(capsys, fake_root, tmp_path, "--device-kind", "cpu")
    assert rc == 0 and calls == ["cpu"]
    match = CPU_LINE.search(out)
    assert match, out
    assert "GPU-hours" not in out and float(match.group(3)) == 5.6
    monkeypatch.setattr(dry_run, "measured_rate", lambda *a, **k: pytest.fail("h100 is priced, not timed"))
    gpu_hours = float(GPU_LINE.search(plan(capsys, fake_root, tmp_path)[1]).group(1))
    # One count of MACs, two rates (a trial at 0.25 GPU is charged its MACs at a whole GPU's rate).
    assert float(match.group(1)) == pytest.approx(gpu_hours * RATES["h100"].macs_per_second / 5.6e9, rel=1e-2)


def test_a_config_without_gpus_is_timed_on_the_cpu_by_default(capsys, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(dry_run, "measured_rate", lambda device_name="cpu": calls.append(device_name) or (5e9, "cpu"))
    assert ltkd_main(["plan", "--storage", str(tmp_path / "store")]) == 0  # the quickstart: gpus_per_trial = 0
    out = capsys.readouterr().out
    assert calls == ["cpu"] and "measured on this machine's cpu" in out and "GPU-" not in out


def test_an_unknown_kind_is_one_line_and_status_2(capsys, tmp_path, fake_root):
    rc, out, err = plan(capsys, fake_root, tmp_path, "--device-kind", "b300")
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("ltkd: error: unknown device kind 'b300' for --device-kind (known: h200, h100")
    assert all(kind in err for kind in device_rates.known_kinds())


def test_an_unknown_kind_fails_before_torch_is_loaded():
    outcome = loaded_by("plan", "paper:table1", "--device-kind", "nope")
    assert outcome == {"rc": 2, "heavy": []}


# ------------------------------------------------------------------------------------ counting


def gpu_hours(report: str) -> float:
    line = next(line for line in report.splitlines() if line.startswith("estimate: "))
    return float(re.match(r"estimate: ([\d.]+) GPU-hours", line).group(1))


def table1(tmp_path, gpus: float):
    config = load_config(config_path("paper:table1"))
    config.storage = str(tmp_path / "store")
    config.resources.gpus_per_trial = gpus
    return config


def test_gpu_hours_count_a_whole_gpus_rate_and_the_gpus_a_trial_holds(tmp_path, no_timing):
    """A share of a GPU runs at that share of its rate: GPU-hours do not depend on it. A trial holding
    two GPUs trains on one and holds both: it is charged twice."""
    shared, whole, two = (dry_run.plan_report(table1(tmp_path, gpus), device_kind="h100") for gpus in (0.25, 1, 2))
    assert gpu_hours(shared) == pytest.approx(gpu_hours(whole), abs=0.11)
    assert gpu_hours(two) == pytest.approx(2 * gpu_hours(whole), rel=1e-2)
    assert "each trial holds 1 GPU" in whole and "each trial holds 2 GPUs and trains on one" in two


def test_earlier_gpu_epochs_stay_preferred_times_the_share_held(tmp_path, monkeypatch, no_timing):
    config = table1(tmp_path, 0.25)
    asked = []

    def earlier(config, on_gpu=None):
        asked.append(on_gpu)
        return {key[:5]: 10.0 for stage in dry_run.stages(config) for key in stage.keys}

    monkeypatch.setattr(dry_run, "earlier_epoch_seconds", earlier)
    monkeypatch.setattr(dry_run, "epoch_macs", lambda *a: pytest.fail("every run has earlier epochs"))
    report = dry_run.plan_report(config)
    assert asked == [True]
    # 348,480 epochs of 10 s (24 more teachers than with one teacher seed: +5,760), a quarter of a GPU each.
    epochs = sum(stage.to_run * stage.epochs for stage in dry_run.stages(config))
    assert epochs == 348480
    assert gpu_hours(report) == pytest.approx(epochs * 10 * 0.25 / 3600, abs=0.05)
    assert "1452 runs from the median epoch_seconds of earlier GPU runs on this storage x 0.25 GPUs" in report


def test_earlier_epochs_are_read_from_the_same_kind_of_device(tmp_path, monkeypatch):
    """A GPU estimate takes its earlier epochs from GPU runs, a CPU estimate from CPU runs."""
    import results.store

    config = table1(tmp_path, 0.25)
    (tmp_path / "store" / "older-sweep" / results.store.RESULTS_DIR).mkdir(parents=True)
    base = {"row_kind": "epoch", "dataset": "cifar100", "imbalance_factor": 100.0, "arch": "resnet8x4",
            "method": "ce", "role": "student"}
    frame = pd.DataFrame([{**base, "epoch_seconds": 2.0, "device": "cuda"},
                          {**base, "epoch_seconds": 4.0, "device": "cuda:0"},
                          {**base, "epoch_seconds": 60.0, "device": "cpu"},
                          {**base, "row_kind": "final", "epoch_seconds": 99.0, "device": "cuda"}])
    monkeypatch.setattr(results.store, "read_results", lambda *a, **k: frame)
    key = ("cifar100", 100.0, "resnet8x4", "ce", "student")
    assert dry_run.earlier_epoch_seconds(config, on_gpu=True) == {key: 3.0}
    assert dry_run.earlier_epoch_seconds(config, on_gpu=False) == {key: 60.0}
    assert dry_run.earlier_epoch_seconds(config) == {key: 4.0}  # any device: the median of all three
