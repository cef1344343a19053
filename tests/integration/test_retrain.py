"""The retrain flow end to end: real Prefect API, real SQLite MLflow registry, real DVC."""

from __future__ import annotations

import threading

import pytest
import yaml
from support.prefect_api import artifact, task_runs
from support.retraining import PARAMS, STAGES, client_of, correct, manifest_md5, with_champion

from flows.retrain import retrain_artifact_key, retrain_flow
from flows.training import training_pipeline
from medimg.data.manifest import load_manifest
from medimg.errors import WorkspaceError
from medimg.versioning import pipeline_status

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness",
                                                                 "clean_mlflow_env")]


def test_retrain_does_nothing_without_news_then_trains_on_corrections(make_workspace):
    """One workspace through every case (a champion costs a training): no new labels; six
    corrections, with two retrains started at once; the same labels again; a failed retrain."""
    ws = with_champion(make_workspace, {**PARAMS, "retrain": {"min_new_labels": 6,
                                                             "warm_start": True}})
    client = client_of(ws)
    runs_before = len(client.search_runs([client.get_experiment_by_name("medimg").experiment_id]))
    lock_before = (ws.root / "dvc.lock").read_text()

    state = retrain_flow(str(ws.root), return_state=True)
    result = state.result()

    assert not result.retrained
    assert result.decision.startswith("no retrain: nothing to retrain on: 0 new image(s), "
                                      "0 corrected label(s)")
    assert "retrain.min_new_labels=6" in result.decision
    # no stage ran: the flow's only task run is its assessment
    assert set(task_runs(str(state.state_details.flow_run_id))) == {"assess"}
    assert len(client.search_runs([client.get_experiment_by_name("medimg").experiment_id])) \
        == runs_before
    assert [str(v.version) for v in client.search_model_versions("name='medimg-classifier'")] \
        == ["1"]
    assert (ws.root / "dvc.lock").read_text() == lock_before
    page = artifact(retrain_artifact_key(ws))
    assert "no retrain" in page and "Champion before: v1" in page

    # then reviewers correct enough labels, and two retrains start at once (the schedule and a
    # person): one runs, the other is cancelled at once, so never both promote
    data_before = manifest_md5(ws)
    corrected = correct(ws, 6)
    outcomes: list = []
    threads = [threading.Thread(target=lambda: outcomes.append(
        retrain_flow(str(ws.root), return_state=True))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(state.name for state in outcomes) == ["Cancelled", "Completed"]
    cancelled = next(s for s in outcomes if s.name == "Cancelled")
    assert cancelled.message == "another retrain of ws is running; this one did nothing"
    result = next(s for s in outcomes if s.name == "Completed").result()

    assert result.retrained and result.triggers == ["6 new or corrected labels (at least 6)"]
    assert result.version == "2" and result.champion_before == "1"
    assert result.decision.startswith(("promoted v2 to champion",
                                       "registered v2 as challenger, champion kept"))
    champion = str(client.get_model_version_by_alias("medimg-classifier", "champion").version)
    assert champion == ("2" if result.promoted else "1")
    # the relabelled data is a new DVC data version, and DVC finds everything recorded
    assert result.data_before == data_before != manifest_md5(ws) == result.data_after
    assert (ws.root / "data" / "feedback.dvc").is_file()
    # (ingest is declared always_changed: it runs each time, incrementally)
    assert pipeline_status(ws.root) == {"ingest": ["always changed"]}
    # a label-only change re-runs every stage after ingest (the decodes are asserted in
    # tests/unit/preprocessing/test_preprocess_cache.py)
    assert set(result.pipeline.ran) == STAGES
    version = client.get_model_version("medimg-classifier", "2")
    assert version.tags["data_version"] == result.data_after
    # the page says what changed and what was decided, in Prefect and in the MLflow run
    page = artifact(retrain_artifact_key(ws))
    assert "0 new image(s), 6 corrected label(s)" in page
    assert "| feedback | 6 |" in page
    assert result.decision in page
    run = client.get_run(result.pipeline.mlflow_run_id)
    assert run.data.tags["medimg.retrain.decision"] == result.decision
    assert run.data.metrics["retrain_corrected_labels"] == 6
    feedback_md5 = yaml.safe_load((ws.root / "data" / "feedback.dvc").read_text())["outs"][0]
    assert run.data.tags["medimg.retrain.feedback_version"] == feedback_md5["md5"]
    # retrain.warm_start: training began from the champion's weights, as the run records
    assert run.data.tags["runtime.warm_start"] == "models:/medimg-classifier/1"
    assert not (ws.root / "models" / "warm_start").exists()  # never left for a later run
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "retrain")}
    assert "retrain/summary.md" in logged
    labels = load_manifest(ws.manifest_path).set_index("image_id").loc[corrected]
    assert labels["label_source"].str.startswith("feedback:").all()

    # the same labels do not retrain twice
    again = retrain_flow(str(ws.root))
    assert not again.retrained

    # a retrain that fails leaves the champion where it was, and says why in one line: here a
    # stage the team added to dvc.yaml (a check before training) fails
    text = (ws.root / "dvc.yaml").read_text()
    check = ("  site-check:\n    cmd: echo 'scanner list out of date' >&2; exit 3\n"
             "    deps:\n      - data/processed\n\n")
    (ws.root / "dvc.yaml").write_text(text.replace("  train:\n", check + "  train:\n", 1))
    correct(ws, 6, reviewer="dr-b", last=True)
    versions_before = len(client.search_model_versions("name='medimg-classifier'"))
    with pytest.raises(WorkspaceError) as failed:
        retrain_flow(str(ws.root))
    assert str(failed.value) == ("retrain failed, champion kept: dvc.yaml stage 'site-check' "
                                 "(`echo 'scanner list out of date' >&2; exit 3`) failed: "
                                 "scanner list out of date")
    assert str(client.get_model_version_by_alias("medimg-classifier", "champion").version) \
        == champion
    assert len(client.search_model_versions("name='medimg-classifier'")) == versions_before
    assert str(failed.value) in artifact(retrain_artifact_key(ws))


def test_medimg_retrain_on_the_command_line_says_why_it_did_nothing(make_workspace):
    from conftest import medimg_cli

    ws = make_workspace(with_data=False, name="empty")
    done = medimg_cli("retrain", cwd=ws.root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ("no retrain: nothing to retrain on: 0 new image(s), 0 corrected label(s) "
            "(no manifest yet), below retrain.min_new_labels=50; drift not measurable"
            in " ".join(done.stdout.split()))
    assert "Traceback" not in done.stdout + done.stderr


def test_a_pipeline_run_while_another_runs_is_refused_in_one_line(make_workspace):
    import subprocess
    import sys
    import textwrap

    from medimg.locks import LockBusy

    ws = make_workspace(with_data=False, name="busy")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        import sys
        from pathlib import Path
        from medimg.locks import workspace_lock
        with workspace_lock(Path({str(ws.root)!r}), "pipeline"):
            print("held", flush=True)
            sys.stdin.readline()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockBusy) as refused:
            training_pipeline(str(ws.root))
    finally:
        holder.communicate("done\n", timeout=30)
    assert str(refused.value) == (f"another pipeline run of {ws.root} is running; wait for it "
                                  "to end (Prefect's UI or `medimg runs` shows it)")
    assert not ws.manifest_path.exists()  # it did nothing
