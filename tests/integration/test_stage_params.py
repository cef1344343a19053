"""Every param a stage reads is listed for that stage in dvc.yaml, and nothing it does not read.

Each stage runs for real on a tiny workspace with a config that records every key read. A stage
that read a param dvc.yaml does not list would not re-run when that param changed; a listed
param it does not read would re-run it for nothing (as `evaluate.threshold_*` once retrained the
model). Stages take their config as an argument: reading ``ws.config`` inside one fails here.
"""

from __future__ import annotations

import pytest
from support.recording import covered, recording, unread

from medimg.versioning import read_stages
from medimg.workspace import Workspace

pytestmark = pytest.mark.integration


@pytest.mark.usefixtures("clean_mlflow_env")
def test_each_stage_reads_exactly_the_params_dvc_yaml_lists(make_workspace, monkeypatch):
    from medimg.data.stage import run_ingest
    from medimg.evaluation.stage import run_evaluate
    from medimg.preprocessing.stage import run_preprocess
    from medimg.registry.stage import run_register
    from medimg.settings import Settings
    from medimg.training.stage import run_train
    from medimg.validation.stage import run_validate

    ws = make_workspace({"train": {"epochs": 1}, "evaluate": {"bootstrap_resamples": 20}})
    config = ws.config
    listed = {s.name: s.params for s in read_stages(ws.root / "dvc.yaml")}

    def forbidden(self):
        raise AssertionError("a stage read ws.config; take the config argument")

    monkeypatch.setattr(Workspace, "config", property(forbidden))
    settings = Settings.model_validate({"pseudonym_key": "test-key-0123456789abcdef"})
    runs = {
        "ingest": lambda c: run_ingest(ws, c, settings),
        "validate": lambda c: run_validate(ws, c),
        "preprocess": lambda c: run_preprocess(ws, c),
        "train": lambda c: run_train(ws, c),
        "evaluate": lambda c: run_evaluate(ws, c),
        "register": lambda c: run_register(ws, c),
    }
    problems = []
    for stage, run in runs.items():
        proxy, reads = recording(config)
        run(proxy)
        assert reads, f"{stage} read no params at all: the recording is broken"
        missing = sorted(k for k in reads if not covered(k, listed[stage]))
        if missing:
            problems.append(f"{stage} reads {missing}, not in its dvc.yaml params")
        stale = unread(listed[stage], reads)
        if stale:
            problems.append(f"{stage} lists {stale} in dvc.yaml but never reads them")
    assert problems == []


def test_the_recording_sees_a_read_and_a_section_method():
    from medimg.config import parse_config

    proxy, reads = recording(parse_config({}))
    assert proxy.train.epochs == 30
    proxy.preprocess.model_dump()
    assert reads == {"train.epochs", "preprocess.*"}
    assert covered("train.epochs", ("train",)) and not covered("train.epochs", ("evaluate",))
    assert unread(("train", "evaluate.slices"), reads) == ["evaluate.slices"]
