"""The logged pyfunc takes image bytes; it reads a file only when its loader opted in."""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from PIL import Image

from medimg.bundle import BundleMeta, ModelBundle
from medimg.config import parse_config
from medimg.data.phantoms import render_phantom
from medimg.registry.champion import predict_test, score
from medimg.registry.stage import _input_example
from medimg.serving import pyfunc
from medimg.training.models import build_model

NAMES = ["normal", "pneumonia"]
THREE = ["normal", "bacterial", "viral"]
SIZE = 32
OPENED: list[str] = []  # files this process opened, of those in WATCHED
WATCHED: set[str] = set()


def _record_open(event: str, args: tuple) -> None:
    # an audit hook sees every open() of the process, Path.read_bytes included
    if event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        name = os.fsdecode(args[0])
        if name in WATCHED:
            OPENED.append(name)


sys.addaudithook(_record_open)  # hooks cannot be removed; this one only watches WATCHED


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory):
    """A tiny bundle logged to a SQLite MLflow store as publish logs it, once with the opt-in
    key (the current model) and once without (a model logged before the key existed), and four
    phantom PNG files of both classes."""
    root = tmp_path_factory.mktemp("pyfunc")
    bundle_dir = root / "bundle"
    model = build_model(SIZE, 1, len(NAMES), parse_config({}).model)
    ModelBundle(model, BundleMeta(NAMES, SIZE, 1, {}, threshold=0.5)).save(bundle_dir)
    # three classes decide by arg-max: a threshold given to the bundle is not kept
    three_dir = root / "three"
    ModelBundle(build_model(SIZE, 1, 3, parse_config({}).model),
                BundleMeta(THREE, SIZE, 1, {}, threshold=0.5)).save(three_dir)
    rng = np.random.default_rng(0)
    files, labels = [], []
    for i, positive in enumerate([False, True, False, True]):
        path = root / f"img{i}.png"
        Image.fromarray(render_phantom(rng, SIZE, positive)).save(path)
        files.append(path)
        labels.append(NAMES[int(positive)])
    example = _input_example(parse_config({"base": {"image_size": SIZE}}).base)

    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        env.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mlflow.set_tracking_uri(uri)
        try:
            experiment = mlflow.create_experiment("pyfunc",
                                                  artifact_location=(root / "mlartifacts").as_uri())
            uris = {}
            with mlflow.start_run(experiment_id=experiment):
                for kind, config in (("current", {"model_config": pyfunc.MODEL_CONFIG}),
                                     ("legacy", {})):
                    uris[kind] = mlflow.pyfunc.log_model(
                        name=kind,
                        python_model=Path(pyfunc.__file__).with_name("mlflow_model.py"),
                        artifacts={pyfunc.BUNDLE_ARTIFACT: str(bundle_dir)},
                        signature=pyfunc.signature_for(NAMES),
                        input_example=example,
                        pip_requirements=["mlflow"],
                        **config,
                    ).model_uri
                uris["three"] = mlflow.pyfunc.log_model(
                    name="three", python_model=Path(pyfunc.__file__).with_name("mlflow_model.py"),
                    artifacts={pyfunc.BUNDLE_ARTIFACT: str(three_dir)},
                    signature=pyfunc.signature_for(THREE), input_example=example,
                    pip_requirements=["mlflow"], model_config=pyfunc.MODEL_CONFIG).model_uri
            yield SimpleNamespace(uri=uris["current"], legacy_uri=uris["legacy"],
                                  three_uri=uris["three"], three_dir=three_dir,
                                  example=example, files=files, labels=labels)
        finally:
            mlflow.set_tracking_uri(None)


def _encoded(paths: list[Path]) -> list[str]:
    return [base64.b64encode(p.read_bytes()).decode("ascii") for p in paths]


def test_three_classes_answer_with_the_arg_max_rule_and_no_threshold(logged) -> None:
    import json

    model = mlflow.pyfunc.load_model(logged.three_uri)
    out = model.predict(pd.DataFrame({"image": _encoded(logged.files)}))
    assert list(out.columns) == ["label", "p_normal", "p_bacterial", "p_viral", "decision_rule"]
    assert set(out["decision_rule"]) == {"argmax"}
    probs = out[["p_normal", "p_bacterial", "p_viral"]].to_numpy()
    assert list(out["label"]) == [THREE[k] for k in probs.argmax(axis=1)]
    saved = json.loads((logged.three_dir / "bundle.json").read_text())
    assert saved["decision_rule"] == "argmax" and saved["threshold"] is None
    outputs = [c.name for c in model.metadata.get_output_schema().inputs]
    assert "threshold" not in outputs and "decision_rule" in outputs


def test_image_bytes_predict(logged) -> None:
    model = mlflow.pyfunc.load_model(logged.uri)

    out = model.predict(pd.DataFrame({"image": _encoded(logged.files)}))
    assert list(out.columns) == ["label", "p_normal", "p_pneumonia", "decision_rule",
                                 "threshold"]
    assert set(out["decision_rule"]) == {"threshold"} and set(out["threshold"]) == {0.5}
    assert len(out) == 4 and set(out["label"]) <= set(NAMES)
    assert (out["p_normal"] + out["p_pneumonia"]).to_numpy() == pytest.approx(1.0)
    # the phantom stored with the model as its input example predicts too
    assert len(model.predict(logged.example)) == 1


@pytest.mark.parametrize("model_config", [None, {"allow_paths": False}, {"allow_paths": "true"}],
                         ids=["no-config", "false", "string-true"])
def test_a_path_is_refused_without_the_opt_in_and_never_opened(logged, tmp_path,
                                                               model_config) -> None:
    model = mlflow.pyfunc.load_model(logged.uri, model_config=model_config)
    missing = str(tmp_path / "no-such-file.png")
    existing = str(logged.files[0])
    WATCHED.update({missing, existing})
    OPENED.clear()

    messages = []
    for path in (missing, existing):
        with pytest.raises(MlflowException) as refused:
            model.predict(pd.DataFrame({"path": [path]}))
        messages.append(refused.value.message)
        assert refused.value.get_http_status_code() == 400  # what `mlflow models serve` answers
    # the same refusal whether or not the file is there: the path was never looked at
    assert messages[0] == messages[1] == pyfunc.PATHS_REFUSED
    assert "\n" not in messages[0]
    assert "base64-encoded in the 'image' column" in messages[0]
    assert 'model_config={"allow_paths": true}' in messages[0]
    assert OPENED == []
    # a row that also carries the image is refused all the same: paths are not a fallback
    both = pd.DataFrame({"image": _encoded(logged.files[:1]), "path": [existing]})
    OPENED.clear()
    with pytest.raises(MlflowException, match="'path' column is refused"):
        model.predict(both)
    assert OPENED == []


def test_with_the_opt_in_a_path_predicts_as_its_bytes_do(logged) -> None:
    model = mlflow.pyfunc.load_model(logged.uri, model_config={"allow_paths": True})
    paths = [str(p) for p in logged.files]
    WATCHED.update(paths)
    OPENED.clear()

    from_paths = model.predict(pd.DataFrame({"path": paths}))
    assert sorted(OPENED) == sorted(paths)  # the model read the files itself
    from_bytes = model.predict(pd.DataFrame({"image": _encoded(logged.files)}))
    assert from_paths["p_pneumonia"].to_numpy() == pytest.approx(
        from_bytes["p_pneumonia"].to_numpy())


def test_champion_rescoring_scores_current_and_older_models_alike(logged) -> None:
    """Publish re-scores the champion from the workspace's files: the current model with the
    opt-in, one logged before the opt-in existed (which would refuse paths) from the bytes."""
    ws = SimpleNamespace(resolve=Path)
    config = parse_config({})
    test = pd.DataFrame({"source_path": [str(p) for p in logged.files], "label": logged.labels})

    # MLflow drops an opt-in that the model was not logged with: the older model refuses paths
    older_model = mlflow.pyfunc.load_model(logged.legacy_uri, model_config={"allow_paths": True})
    with pytest.raises(MlflowException, match="'path' column is refused"):
        older_model.predict(pd.DataFrame({"path": test["source_path"]}))

    current_predictions = predict_test(ws, config, logged.uri, test)
    older_predictions = predict_test(ws, config, logged.legacy_uri, test)
    assert current_predictions is not None and older_predictions is not None
    current, older = score(config, test, current_predictions), score(config, test,
                                                                     older_predictions)
    assert current["n"] == older["n"] == 4
    for key in ("accuracy", "f1", "recall", "roc_auc"):
        assert current[key] == pytest.approx(older[key]), key
