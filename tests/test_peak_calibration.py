"""The GEMM peak behind '%peak': calibrated once as the best of several attempts, reused, and a fraction above
100% flagged instead of shown as a fact."""

from __future__ import annotations

import pytest
import torch

from harness.execution import machine


@pytest.fixture(autouse=True)
def fresh_peaks(monkeypatch):
    monkeypatch.setattr(machine, "_PEAKS", {})
    monkeypatch.setattr(machine, "CALIBRATION_SECONDS", 0.01)
    monkeypatch.setattr(machine, "CALIBRATION_PAUSE_S", 0.0)


def test_calibration_keeps_the_best_attempt_and_later_runs_reuse_it(monkeypatch):
    loaded = iter([0.0056, 2.5, 0.9])  # one attempt under load must not become the peak
    monkeypatch.setattr(machine, "_attempt", lambda a, b, seconds: next(loaded))
    assert machine.calibrate_peak(torch.float32, "cpu", attempts=3) == 2.5

    def no_more(*args):
        raise AssertionError("measured again")

    monkeypatch.setattr(machine, "_attempt", no_more)
    assert machine.peak_tflops(torch.float32, "cpu") == 2.5
    assert machine.peak_tflops("float32", "cpu") == 2.5  # dtype by name or by torch dtype


def test_a_real_calibration_measures_a_positive_peak_per_dtype():
    peaks = machine.calibrate_peaks([torch.float32, "bfloat16"], "cpu")
    assert set(peaks) == {"float32", "bfloat16"} and all(p > 0 for p in peaks.values())


def test_installed_and_explicit_peaks_are_used_without_measuring(monkeypatch):
    def no_measure(*args):
        raise AssertionError("measured")

    monkeypatch.setattr(machine, "_attempt", no_measure)
    monkeypatch.setattr(machine, "_PEAKS", {})  # nothing calibrated by earlier tests in this process
    monkeypatch.delenv(machine.PEAKS_ENV, raising=False)
    machine.install_peaks({"bfloat16": 3.0, "float32": 0}, "cpu")  # a zero is no calibration
    assert machine.peak_tflops(torch.bfloat16, "cpu") == 3.0
    assert machine.peak_tflops(torch.float16, "cpu", explicit=7.0) == 7.0
    assert machine.peak_tflops(torch.float16, "cpu") == 7.0
    with pytest.raises(AssertionError, match="measured"):
        machine.peak_tflops(torch.float32, "cpu")


def test_a_fraction_above_one_is_flagged_suspect():
    assert machine.peak_fields(2.0, 4.0) == {"frac_peak": 0.5, "peak_suspect": False}
    assert machine.peak_fields(2.609, 1.0) == {"frac_peak": 2.609, "peak_suspect": True}
    assert machine.peak_fields(None, 1.0) == {"frac_peak": None, "peak_suspect": False}
    assert machine.peak_fields(1.0, 0.0) == {"frac_peak": None, "peak_suspect": False}
