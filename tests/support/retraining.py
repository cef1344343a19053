"""What the retrain tests share: a champion to retrain against, and reviewers' corrections."""

from __future__ import annotations

import mlflow
import yaml
from mlflow import MlflowClient

from flows.training import training_pipeline
from medimg.data.manifest import load_manifest
from medimg.feedback.review import add_feedback

# every model passes the absolute gates and non-inferiority is loose, so the retrain's decision
# depends on the flow, not on how well two tiny models happen to train
PARAMS = {"gates": {"min_f1": 0.0, "min_recall": 0.0, "noninferiority_margin": 1.0},
          "retrain": {"min_new_labels": 6}}
STAGES = {"ingest", "validate", "preprocess", "train", "evaluate", "register"}


def client_of(ws) -> MlflowClient:
    uri = f"sqlite:///{ws.mlflow_db}"
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def manifest_md5(ws) -> str:
    lock = yaml.safe_load((ws.root / "dvc.lock").read_text())
    (md5,) = [o["md5"] for o in lock["stages"]["ingest"]["outs"]
              if o["path"] == "data/manifest.parquet"]
    return md5


def correct(ws, n: int, reviewer: str = "dr-a", last: bool = False) -> list[str]:
    """Flip the labels of the first (or ``last``) ``n`` train images through the feedback API;
    their ids."""
    manifest = load_manifest(ws.manifest_path)
    classes = list(ws.config.base.class_names)
    train = manifest[manifest["split"] == "train"].drop_duplicates("image_id")
    train = train.tail(n) if last else train.head(n)
    for row in train.itertuples():
        other = classes[1 - classes.index(row.label)]
        add_feedback(ws, ws.config, row.image_id, other, reviewer)
    return list(train["image_id"])


def with_champion(make_workspace, params):
    ws = make_workspace(params)
    first = training_pipeline(str(ws.root))
    assert first.registration.version == "1" and "champion" in first.registration.aliases
    return ws


