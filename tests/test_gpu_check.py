"""benchmark/gpu_check.py: the tiny CPU run has a row per stage and amp mode with measured,
positive numbers; what was not measured is '-' / null; bad flags are one-line errors."""
from __future__ import annotations

import json
import math

import pytest

from segbench.benchmark import gpu_check

STAGES = ("gan", "segmenter", "fid")
AMPS = ("off", "bf16")


def _fid_weights_missing() -> str | None:
    from segbench import feature_nets

    try:
        feature_nets.locate_inception_weights()
        feature_nets._extractor_class()
    except (feature_nets.InceptionWeightsNotFoundError, ImportError) as exc:
        return str(exc)
    return None


def _table_rows(text: str) -> dict[tuple[str, str], list[str]]:
    """(stage, amp) -> the table line's cells (split on runs of 2+ spaces)."""
    import re

    rows = {}
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 9 and cells[0] in STAGES:
            rows[(cells[0], cells[1])] = cells
    return rows


def _positive_float(cell: str) -> float:
    value = float(cell.replace(",", ""))
    assert math.isfinite(value) and value > 0, cell
    return value


def test_tiny_cpu_run_reports_every_stage_and_amp_mode(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--device", "cpu", "--tiny", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    env = report["environment"]
    assert env["device"] == "cpu" and env["torch"] and env["device_name"] and report["tiny"] is True
    assert text.splitlines()[0].startswith(f"gpu-check  torch {env['torch']}  device cpu")

    by_key = {(r["stage"], r["amp"]): r for r in report["rows"]}
    assert set(by_key) == {(s, a) for s in STAGES for a in AMPS}
    assert [r["stage"] for r in report["rows"]] == [s for s in STAGES for _ in AMPS]  # table order
    table = _table_rows(text)
    assert set(table) == set(by_key)
    fid_missing = _fid_weights_missing()
    for (stage, amp), row in by_key.items():
        cells = table[(stage, amp)]
        if stage == "fid" and fid_missing:
            assert row["status"].startswith("skipped: ") and row["seconds"] is None and cells[4] == "-"
            continue
        assert row["status"] == "ran", row
        assert row["peak_rss_mb"] > 0 and row["peak_cuda_mb"] is None
        assert isinstance(row["seconds"], float) and row["seconds"] > 0
        assert isinstance(row["images_s"], float) and row["images_s"] > 0
        _positive_float(cells[4]), _positive_float(cells[6])  # seconds, images/s
        assert cells[7].endswith("(rss)") and _positive_float(cells[7].split()[0])
        if stage == "fid":
            assert row["images"] == 4 and row["steps"] is None and row["it_s"] is None and cells[5] == "-"
            assert cells[2] == "4 img"
        else:
            assert row["steps"] == 3 and row["images"] is None and cells[2] == "3 steps"
            assert isinstance(row["it_s"], float) and row["it_s"] > 0 and _positive_float(cells[5])
            assert row["images_s"] == pytest.approx(row["it_s"] * row["batch_size"], rel=1e-6)
    assert by_key[("segmenter", "off")]["note"].endswith("pairs from the gan stage's generator")


def test_skipped_fid_row_prints_no_numbers(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SEGBENCH_FID_INCEPTION_WEIGHTS", str(tmp_path / "absent.pt"))
    assert gpu_check.main(["--device", "cpu", "--tiny", "--stages", "fid", "--amp", "off"]) == 0
    text = capsys.readouterr().out
    (cells,) = _table_rows(text).values()
    assert cells[-1].startswith("skipped: FID Inception weights not found")
    assert cells[2:8] == ["-"] * 6


def test_cli_subcommand_and_one_line_errors(capsys):
    import torch

    from segbench.benchmark.cli import main as cli_main

    assert cli_main(["gpu-check", "--device", "cpu", "--tiny", "--stages", "gan", "--amp", "bf16"]) == 0
    assert set(_table_rows(capsys.readouterr().out)) == {("gan", "bf16")}
    assert gpu_check.main(["--device", "cpu", "--tiny", "--amp", "off,fp32"]) == 2
    assert gpu_check.main(["--device", "cpu", "--tiny", "--stages", "gan,eval"]) == 2
    assert gpu_check.main(["--device", "cpu", "--tiny", "--steps", "0"]) == 2
    if not torch.cuda.is_available():  # the full (paper-size) check refuses to start on a CPU by accident
        assert gpu_check.main([]) == 2
        assert gpu_check.main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert all(line.startswith("error: ") for line in err.strip().splitlines()), err
