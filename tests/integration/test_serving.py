"""The registered champion behind `mlflow models serve`: a real REST request with an image."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request

import pytest
from support.review import champion_workspace
from support.servers import served_champion

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_mlflow_env")]


def _post(url: str, body: dict) -> tuple[int, dict | str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def test_mlflow_models_serve_answers_a_request_that_carries_an_image(workspace_templates,
                                                                      tmp_path):
    # a trained workspace's model registered as champion (how it got there is not the point)
    ws = champion_workspace(workspace_templates, tmp_path / "ws")
    bundle = json.loads((ws.model_dir / "bundle.json").read_text())

    with served_champion(ws, tmp_path / "serve.log") as url:
        images = sorted(ws.raw_dir.rglob("*.png"))[:2]
        encoded = [[base64.b64encode(p.read_bytes()).decode()] for p in images]
        status, answer = _post(f"{url}/invocations",
                               {"dataframe_split": {"columns": ["image"], "data": encoded}})
        assert status == 200, answer
        rows = answer["predictions"]
        assert len(rows) == 2
        for row in rows:
            assert row["label"] in {"normal", "pneumonia"}
            assert row["p_normal"] + row["p_pneumonia"] == pytest.approx(1.0, abs=1e-6)
            assert row["decision_rule"] == "threshold"
            assert row["threshold"] == pytest.approx(bundle["threshold"])
            assert row["label"] == ("pneumonia" if row["p_pneumonia"] >= row["threshold"]
                                    else "normal")
        # a request without an image is refused, not answered with a guess
        status, answer = _post(f"{url}/invocations",
                               {"dataframe_split": {"columns": ["image"], "data": [["@@@"]]}})
        assert status >= 400 and "base64" in str(answer)
        # the served model reads no files: a path is refused with the fix, the file untouched.
        # Opening a FIFO blocks until a writer comes, so a server that opened it would hang.
        fifo = tmp_path / "no-writer.png"
        os.mkfifo(fifo)
        for path in (images[0], fifo):
            status, answer = _post(f"{url}/invocations",
                                   {"dataframe_split": {"columns": ["path"],
                                                        "data": [[str(path)]]}})
            assert status == 400, answer
            error = json.loads(answer)
            assert error["error_code"] == "INVALID_PARAMETER_VALUE"
            assert "base64-encoded in the 'image' column" in error["message"]
            assert 'model_config={"allow_paths": true}' in error["message"]
