"""The node's throughput probe: real figures on this machine, measured once per machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexa_engines import probe


def test_the_probe_measures_this_machine_and_is_kept_for_the_same_hardware(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gflops, gbps = probe.measure_cpu(budget_s=0.05)
    assert gflops > 0 and gbps > 0
    calls: list[int] = []

    def fake() -> tuple[float, float]:
        calls.append(1)
        return 123.4, 5.6

    monkeypatch.setattr(probe, "measure_cpu", fake)
    key = {"cpu_model": "x", "cpu_count": 2}
    first = probe.measured(tmp_path, key)
    assert first == probe.Throughput(123.4, 5.6, None) and calls == [1]
    assert probe.measured(tmp_path, key) == first and calls == [1]  # cached
    probe.measured(tmp_path, {**key, "cpu_count": 4})  # another machine: measured again
    assert calls == [1, 1]
