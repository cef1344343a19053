"""The review API against the real app (TestClient), a real MLflow registry and the real
feedback log: predict, heat map, feedback, worklist, model, health; the champion followed
without a restart; and schemathesis fuzzing the app's own OpenAPI schema."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from support.review import champion_workspace, png_bytes

from medimg.feedback.log import read_log
from medimg.feedback.predictions import read_predictions
from medimg.review.app import create_app
from medimg.review.auth import add_user, users_path
from medimg.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_mlflow_env")]


@pytest.fixture
def review(workspace_templates, tmp_path):
    ws = champion_workspace(workspace_templates, tmp_path / "ws")
    token = add_user(users_path(ws), "dr-a")
    client = TestClient(create_app(ws, ws.config, Settings()))
    return ws, client, {"Authorization": f"Bearer {token}"}


def test_predict_heatmap_feedback_and_worklist_through_the_api(review):
    ws, client, auth = review
    health = client.get("/health").json()
    assert health == {"status": "ok", "model_version": "1", "detail": None}

    model = client.get("/model", headers=auth).json()
    assert (model["version"], model["alias"]) == ("1", "champion")
    assert model["decision_rule"] == "threshold" and 0 < model["threshold"] < 1
    f1 = model["test_metrics"]["f1"]
    assert f1["ci_low"] <= f1["value"] <= f1["ci_high"]

    answer = client.post(
        "/predict", files={"image": ("film.png", png_bytes(), "image/png")}, headers=auth
    )
    assert answer.status_code == 200, answer.text
    p = answer.json()
    assert p["model_version"] == "1" and p["decision_rule"] == "threshold"
    assert sum(p["probabilities"].values()) == pytest.approx(1.0)
    positive = p["probabilities"][ws.config.base.class_names[-1]]
    assert p["label"] == ws.config.base.class_names[int(positive >= p["threshold"])]
    assert p["uncertainty"]["distance"] == pytest.approx(abs(positive - p["threshold"]))
    # recorded for review, named by content hash
    [recorded] = read_predictions(ws)
    assert recorded.prediction_id == p["prediction_id"] and len(recorded.image_id) == 64

    heat = client.get(p["heatmap_url"], headers=auth)
    assert heat.status_code == 200 and heat.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(heat.content))
    assert overlay.mode == "RGB" and overlay.height == ws.config.base.image_size
    assert client.get(f"/predictions/{p['prediction_id']}", headers=auth).json() == p

    waiting = client.get("/worklist", headers=auth).json()["items"]
    assert [(i["prediction_id"], i["reviewed"]) for i in waiting] == [(p["prediction_id"], False)]

    other = next(c for c in ws.config.base.class_names if c != p["label"])
    entry = client.post(
        "/feedback", json={"prediction_id": p["prediction_id"], "label": other}, headers=auth
    )
    assert entry.status_code == 200, entry.text
    body = entry.json()
    assert (body["reviewer"], body["label"], body["prediction_id"]) == (
        "dr-a",
        other,
        p["prediction_id"],
    )
    [logged] = [e for e in read_log(ws) if e.kind == "label"]
    assert (logged.reviewer, logged.model_version, logged.threshold) == (
        "dr-a",
        "1",
        pytest.approx(p["threshold"]),
    )
    # the new image came in through ingest with the reviewer's label
    import pandas as pd

    manifest = pd.read_parquet(ws.manifest_path)
    row = manifest.loc[manifest["image_id"] == p["image_id"]]
    assert list(row["label"]) == [other] and row["label_source"].iloc[0].startswith("feedback:")

    assert client.get("/worklist", headers=auth).json()["items"] == []
    done = client.get("/worklist", params={"all": True}, headers=auth).json()["items"]
    assert [(i["reviewed"], i["reviewers"]) for i in done] == [(True, ["dr-a"])]


def test_errors_are_one_json_line_with_the_right_status(review):
    _, client, auth = review
    missing = client.get("/predictions/" + "ab" * 16, headers=auth)
    assert missing.status_code == 404 and missing.json() == {
        "detail": "no such prediction; see the worklist"
    }
    garbage = client.post(
        "/predict", files={"image": ("x.png", b"not an image", "image/png")}, headers=auth
    )
    assert garbage.status_code == 422 and "\n" not in garbage.json()["detail"]
    assert "Traceback" not in garbage.text
    bad_label = client.post(
        "/feedback", json={"prediction_id": "ab" * 16, "label": "x"}, headers=auth
    )
    assert bad_label.status_code == 404
    extra = client.post(
        "/feedback", json={"prediction_id": "ab" * 16, "label": "x", "who": 1}, headers=auth
    )
    assert extra.status_code == 422 and extra.json()["detail"].startswith("who:")
    assert (
        client.post(
            "/predict", content=b"{}", headers={**auth, "content-type": "application/json"}
        ).status_code
        == 400
    )


def test_a_new_champion_is_served_without_a_restart(review):
    from medimg.registry.stage import run_register

    ws, client, auth = review
    first = client.post(
        "/predict", files={"image": ("a.png", png_bytes(seed=1), "image/png")}, headers=auth
    ).json()
    assert first["model_version"] == "1"
    second = run_register(ws, ws.config)  # the same app object throughout
    assert second.version == "2" and "champion" in second.aliases
    assert client.get("/model", headers=auth).json()["version"] == "2"
    after = client.post(
        "/predict", files={"image": ("b.png", png_bytes(seed=2), "image/png")}, headers=auth
    ).json()
    assert after["model_version"] == "2"
    # the older prediction's heat map still comes from the version that made it
    assert client.get(first["heatmap_url"], headers=auth).status_code == 200


def test_a_model_uri_of_another_registered_name_serves_that_model(workspace_templates, tmp_path):
    """``medimg serve --model models:/NAME/1`` serves NAME's version 1, even when NAME is not
    the workspace's registry.model_name."""
    import mlflow

    from medimg.review.live_model import LiveModel
    from medimg.tracking import use_workspace_tracking

    ws = champion_workspace(workspace_templates, tmp_path / "ws")
    use_workspace_tracking(ws, ws.config.registry.experiment_name, Settings())
    champion = mlflow.MlflowClient().get_model_version_by_alias(
        ws.config.registry.model_name, "champion")
    mlflow.register_model(champion.source, "another-classifier")
    config = ws.config.model_copy(update={"registry": ws.config.registry.model_copy(
        update={"model_name": "nothing-under-this-name"})})
    served = LiveModel(ws, config, Settings(), model_uri="models:/another-classifier/1").current()
    assert (served.name, served.version) == ("another-classifier", "1")
    assert served.uri == "models:/another-classifier/1"
    assert served.bundle.meta.class_names == ws.config.base.class_names
