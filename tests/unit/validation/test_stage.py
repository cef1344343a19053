"""The validate stage over a workspace: quarantine count, levels, and the report it leaves."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from support.manifest import manifest_frame, manifest_rows

from medimg.config import Config, parse_config
from medimg.data.manifest import write_manifest
from medimg.errors import ValidationFailed
from medimg.validation.stage import count_quarantined, run_validate
from medimg.workspace import Workspace


def _workspace(tmp_path: Path, quarantine_lines: list[str] | None = None) -> Workspace:
    """A workspace with a clean 18-image manifest and, if given, a quarantine log."""
    ws = Workspace(tmp_path)
    write_manifest(manifest_frame(manifest_rows().values()), ws.manifest_path)
    if quarantine_lines is not None:
        ws.quarantine_dir.mkdir(parents=True)
        (ws.quarantine_dir / "quarantine.jsonl").write_text("".join(quarantine_lines))
    return ws


def _entry(name: str) -> str:
    return json.dumps({"source_path": f"raw/{name}", "reason": "truncated or corrupt"}) + "\n"


def test_counts_one_quarantined_file_per_log_line(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    assert count_quarantined(ws) == 0

    ws.quarantine_dir.mkdir(parents=True)
    (ws.quarantine_dir / "quarantine.jsonl").write_text(_entry("a.png") + "\n" + _entry("b.png"))
    assert count_quarantined(ws) == 2


def test_a_critical_failure_raises_after_writing_the_report(tmp_path: Path) -> None:
    ws = _workspace(tmp_path, [_entry(f"{i}.png") for i in range(5)])

    with pytest.raises(ValidationFailed) as raised:
        run_validate(ws, Config())

    message = str(raised.value)
    assert "\n" not in message
    assert "quarantine_rate" in message and "reports/validation.json" in message
    written = json.loads(ws.validation_report_path.read_text())
    assert written["success"] is False and written["failed"] == ["quarantine_rate"]
    check = next(c for c in written["checks"] if c["name"] == "quarantine_rate")
    assert check["observed"]["quarantined"] == 5 and check["observed"]["manifest_rows"] == 18
    assert (ws.data_docs_dir / "index.html").is_file()


def test_warnings_are_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ws = _workspace(tmp_path)
    manifest = pd.read_parquet(ws.manifest_path)
    manifest.loc[0, "patient_source"] = "image"
    # Two train images 2 bits apart with the same thumbnail: near-duplicates at the default
    # bound, not at 1.
    manifest.loc[1, "phash"] = f"{int(manifest.loc[2, 'phash'], 16) ^ 0b11:016x}"
    manifest.loc[1, "thumbnail"] = manifest.loc[2, "thumbnail"]
    write_manifest(manifest, ws.manifest_path)
    config = parse_config({"data": {"near_duplicate_distance": 1}})

    with caplog.at_level(logging.WARNING, logger="medimg"):
        report = run_validate(ws, config)

    assert report.success
    assert [c.name for c in report.warnings] == ["patient_ids_present"]
    assert any("patient_ids_present" in r.getMessage() for r in caplog.records)
    assert json.loads(ws.validation_report_path.read_text())["warnings"] == ["patient_ids_present"]


def test_without_raising_a_failed_contract_is_returned(tmp_path: Path) -> None:
    ws = _workspace(tmp_path, [_entry(f"{i}.png") for i in range(5)])

    report = run_validate(ws, Config(), raise_on_failure=False)

    assert not report.success
    assert [c.name for c in report.failed_critical] == ["quarantine_rate"]


@pytest.mark.parametrize(("channels", "warned"), [(1, True), (3, False)])
def test_the_stage_warns_of_colour_images_in_a_greyscale_run(tmp_path: Path, channels: int,
                                                             warned: bool) -> None:
    ws = _workspace(tmp_path)
    manifest = pd.read_parquet(ws.manifest_path)
    manifest["channels"] = 3
    manifest["colour"] = False
    manifest.loc[[0, 4], "colour"] = True  # two skin-lesion photographs among grey films
    write_manifest(manifest, ws.manifest_path)

    report = run_validate(ws, parse_config({"base": {"channels": channels}}))

    assert report.success  # a warning by default: reported, not raised
    assert ("colour_matches_channels" in [c.name for c in report.warnings]) is warned
    if warned:
        check = next(c for c in report.warnings if c.name == "colour_matches_channels")
        assert "2 images have real colour" in check.details and "base.channels: 3" in check.details
