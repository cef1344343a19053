"""The review service's own logic: keeping an image while others keep the same one, and the
order a reviewer is taken through the worklist."""

from __future__ import annotations

import threading

import pytest
from support.review import png_bytes

from medimg.config import Config
from medimg.feedback.predictions import new_prediction, record_predictions
from medimg.review.service import ReviewService
from medimg.review.uploads import accept_image, image_path, keep_image
from medimg.workspace import Workspace

# an earlier test in this process may have pointed MLflow's environment at its own store
pytestmark = pytest.mark.usefixtures("clean_mlflow_env")


def test_the_same_image_kept_by_many_uploads_at_once_is_one_whole_file(tmp_path):
    ws = Workspace(tmp_path)
    image = accept_image(png_bytes(seed=4), Config())
    errors: list[BaseException] = []

    def keep() -> None:
        try:
            for _ in range(25):
                keep_image(ws, image)
        except BaseException as exc:  # any failure fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=keep) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    kept = image_path(ws, image.image_id)
    assert kept is not None and kept.read_bytes() == image.data
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]  # no temporary file left


def test_next_walks_the_whole_worklist_and_wraps_round(tmp_path):
    ws = Workspace(tmp_path)
    names = ["normal", "pneumonia"]
    # distances to the threshold 0.5: 0.05, 0.1, 0.2 -> this order on the worklist
    records = [new_prediction(f"{i:064x}", [1 - p, p], names, "m", "1", 0.5)
               for i, p in enumerate((0.6, 0.55, 0.7))]
    record_predictions(ws, records)
    service = ReviewService(ws, Config(), None, model=None)  # type: ignore[arg-type]
    b, a, c = (r.prediction_id for r in (records[1], records[0], records[2]))
    assert service.next_after(b) == a
    assert service.next_after(a) == c
    assert service.next_after(c) == b
    assert service.next_after("f" * 32) == b  # a reviewed one: the most uncertain waiting


def test_an_unexpected_error_is_a_json_500_that_names_only_its_type(tmp_path, caplog):
    import logging

    from fastapi.testclient import TestClient

    from medimg.review.app import create_app
    from medimg.settings import Settings
    from medimg.workspace import init_workspace

    ws = init_workspace(tmp_path / "ws")
    app = create_app(ws, ws.config, Settings())

    @app.get("/planted-failure")
    def fail() -> None:
        raise RuntimeError("DOE^JANE was here")

    caplog.set_level(logging.DEBUG)
    answer = TestClient(app).get("/planted-failure")
    assert answer.status_code == 500
    assert answer.json() == {"detail": "internal error; the server log names the exception type"}
    assert "content-security-policy" in answer.headers
    assert "RuntimeError" in caplog.text and "DOE^JANE" not in caplog.text
    # no champion yet: the app answers, and says so without naming the registry
    health = TestClient(app).get("/health").json()
    assert (health["status"], health["model_version"]) == ("degraded", None)
