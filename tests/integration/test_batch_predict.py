"""`medimg predict`: files and folders in batches, the champion's preprocessing and decision
rule (the registered pyfunc model's answers), refused files reported and skipped, heat maps
written by content hash, and `--for-review` filling the worklist."""

from __future__ import annotations

import base64
import csv
import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from support.review import champion_workspace

from medimg.feedback.predictions import worklist
from tests.conftest import medimg_cli

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_mlflow_env")]


def test_batch_prediction_matches_the_registered_model_and_fills_the_worklist(
    workspace_templates, tmp_path
):
    ws = champion_workspace(workspace_templates, tmp_path / "ws")
    films = tmp_path / "films"
    nested = films / "ward b"
    nested.mkdir(parents=True)
    originals = sorted(ws.raw_dir.rglob("*.png"))[:30]
    for i, path in enumerate(originals):
        shutil.copy(path, (films if i % 2 else nested) / f"case-{i:02d}.png")
    (films / "notes.png").write_text("not an image at all")  # refused, the rest go on
    one = tmp_path / "single.png"
    shutil.copy(originals[0], one)

    out = tmp_path / "preds.csv"
    done = medimg_cli(
        "predict",
        str(films),
        str(one),
        "--out",
        str(out),
        "--gradcam",
        str(tmp_path / "heat"),
        "--for-review",
        cwd=ws.root,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "31 predicted, 1 refused by medimg-classifier v1" in done.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 32
    [refused] = [r for r in rows if r["error"]]
    assert refused["path"].endswith("notes.png") and "image refused" in refused["error"]
    predicted = [r for r in rows if not r["error"]]

    # the same answers as the registered model, image by image
    mlflow.set_tracking_uri(f"sqlite:///{ws.mlflow_db}")
    pyfunc = mlflow.pyfunc.load_model("models:/medimg-classifier@champion")
    frame = pd.DataFrame(
        {"image": [base64.b64encode(Path(r["path"]).read_bytes()).decode() for r in predicted]}
    )
    expected = pyfunc.predict(frame)
    names = ws.config.base.class_names
    for row, (_, want) in zip(predicted, expected.iterrows(), strict=True):
        assert row["label"] == want["label"]
        for name in names:
            assert float(row[f"p_{name}"]) == pytest.approx(want[f"p_{name}"], abs=1e-5)
        assert float(row["threshold"]) == pytest.approx(want["threshold"])

    heat = sorted(p.stem for p in (tmp_path / "heat").iterdir())
    assert heat == sorted({r["image_id"] for r in predicted})
    items = worklist(ws)
    assert {i.prediction.prediction_id for i in items} == {r["prediction_id"] for r in predicted}
    assert [i.prediction.distance for i in items] == sorted(i.prediction.distance for i in items)
    # the worklist names images by content hash, never by the paths given
    log = (ws.root / "data" / "feedback" / "predictions.jsonl").read_text()
    assert "case-" not in log and "ward" not in log

    as_json = tmp_path / "preds.json"
    again = medimg_cli("predict", str(one), "--out", str(as_json), cwd=ws.root)
    assert again.returncode == 0, again.stderr[-3000:]
    [row] = json.loads(as_json.read_text())
    [first] = [r for r in predicted if r["path"] == str(one)]
    assert (row["label"], row["image_id"]) == (first["label"], first["image_id"])

    missing = medimg_cli("predict", str(tmp_path / "nowhere"), cwd=ws.root)
    assert missing.returncode == 1 and "neither a file nor a folder" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
