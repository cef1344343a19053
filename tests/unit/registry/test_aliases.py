"""Alias moves on a real SQLite MLflow registry: audited, rolled back, compare-and-set, locked
beside the database however its URI names it; and the compare-and-set lock behind a real
`mlflow server` (marked integration)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from support.servers import free_port, running_server

from medimg.errors import MedimgError
from medimg.registry import aliases
from medimg.registry.aliases import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    PromotionConflict,
    alias_version,
    audit_trail,
    promote,
    rollback,
    set_alias,
)

NAME = "medimg-classifier"


def _three_versions(uri: str, tmp_path: Path) -> MlflowClient:
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(NAME)
    run = client.create_run(client.create_experiment(f"models-{tmp_path.name}",
                                                     artifact_location=(
                                                         tmp_path / "artifacts").as_uri()))
    for _ in range(3):
        client.create_model_version(NAME, source=f"{run.info.artifact_uri}/model",
                                    run_id=run.info.run_id)
    return client


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real SQLite registry with three versions and no aliases."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return _three_versions(uri, tmp_path), uri


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` on loopback, for this module's tests."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    argv = [str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination", (root / "served").as_uri()]
    uri = f"http://127.0.0.1:{port}"
    with running_server(argv, f"{uri}/health", env, root / "mlflow.log"):
        yield uri


@pytest.fixture
def server_registry(mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Three versions behind that server: the client cannot reach the server's database."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    for model in client.search_registered_models():  # the previous test's
        client.delete_registered_model(model.name)
    return _three_versions(mlflow_server, tmp_path), mlflow_server


def test_each_move_is_audited_with_what_when_why_and_who(registry):
    client, _ = registry
    set_alias(client, NAME, CHALLENGER, "1", "passed the absolute gates", "run abc")
    promote(client, NAME, "1", "the first model to pass the gates", "run abc",
            expected_champion=None)
    set_alias(client, NAME, CHALLENGER, "2", "passed the absolute gates", "run def")
    promote(client, NAME, "2", "non-inferior to v1", "run def", expected_champion="1")

    assert alias_version(client, NAME, CHAMPION) == "2"
    assert alias_version(client, NAME, PREVIOUS) == "1"
    trail = audit_trail(client, NAME)
    assert [(e.seq, e.alias, e.from_version, e.to_version) for e in trail] == [
        (1, CHALLENGER, None, "1"), (2, CHAMPION, None, "1"), (3, CHALLENGER, "1", "2"),
        (4, PREVIOUS, None, "1"), (5, CHAMPION, "1", "2")]
    assert trail[4].why == "non-inferior to v1" and trail[4].by == "run def"
    assert trail[4].when.endswith("+00:00")
    # kept with the registered model: a fresh client reads the same trail
    assert audit_trail(MlflowClient(registry_uri=client._registry_uri,
                                    tracking_uri=client._registry_uri), NAME) == trail


def test_setting_an_alias_to_where_it_is_writes_nothing(registry):
    client, _ = registry
    set_alias(client, NAME, CHALLENGER, "1", "first", "me")
    assert set_alias(client, NAME, CHALLENGER, "1", "again", "me") is None
    assert len(audit_trail(client, NAME)) == 1


def test_rollback_moves_the_champion_back_and_is_audited(registry):
    client, _ = registry
    promote(client, NAME, "1", "first", "me", expected_champion=None)
    promote(client, NAME, "3", "better", "me", expected_champion="1")
    moves = rollback(client, NAME, "v3 misses small nodules", "dr. who")
    assert alias_version(client, NAME, CHAMPION) == "1"
    assert alias_version(client, NAME, PREVIOUS) is None
    assert [(m.alias, m.from_version, m.to_version) for m in moves] == [
        (CHAMPION, "3", "1"), (PREVIOUS, "1", None)]
    assert audit_trail(client, NAME)[-2].why == "rollback: v3 misses small nodules"
    with pytest.raises(MedimgError, match="no previous champion"):
        rollback(client, NAME, "again", "me")


def test_a_promotion_compared_against_a_stale_champion_is_refused(registry):
    client, _ = registry
    promote(client, NAME, "1", "first", "me", expected_champion=None)
    promote(client, NAME, "2", "better", "someone else", expected_champion="1")
    with pytest.raises(PromotionConflict, match="now v2, not v1"):
        promote(client, NAME, "3", "compared with v1", "me", expected_champion="1")
    assert alias_version(client, NAME, CHAMPION) == "2"
    assert [e.to_version for e in audit_trail(client, NAME) if e.alias == CHAMPION] == ["1", "2"]


def test_a_relative_sqlite_uri_locks_beside_its_database(tmp_path: Path, monkeypatch):
    """`sqlite:///mlflow.db` is mlflow.db in the current directory, for MLflow and for the lock;
    naming that database by its absolute path takes the very same lock."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    client = _three_versions("sqlite:///mlflow.db", tmp_path)
    database = tmp_path / "mlflow.db"
    assert database.is_file()
    absolute = MlflowClient(tracking_uri=f"sqlite:///{database}",
                            registry_uri=f"sqlite:///{database}")

    with aliases.registry_lock(client, NAME):
        assert (tmp_path / f"mlflow.db.{NAME}{aliases.LOCK_SUFFIX}").exists()
        monkeypatch.setattr(aliases, "LOCK_WAIT_SECONDS", 0.5)
        with pytest.raises(MedimgError, match=r"mlflow\.db\.medimg-classifier.* still held"):
            promote(absolute, NAME, "2", "while another move holds the lock", "me",
                    expected_champion=None)
    assert alias_version(client, NAME, CHAMPION) is None

    promote(client, NAME, "1", "first", "me", expected_champion=None)
    set_alias(client, NAME, CHALLENGER, "2", "passed the absolute gates", "me")
    promote(absolute, NAME, "2", "better", "me", expected_champion="1")
    assert alias_version(client, NAME, CHAMPION) == "2"
    assert alias_version(client, NAME, PREVIOUS) == "1"
    assert not list(Path(tmp_path.anchor).glob(f"mlflow.db.{NAME}*"))  # none at the root


# Each promoter imports MLflow, connects, says "ready" and blocks on its stdin; the test closes
# every stdin once all are ready, so both read end-of-file, the barrier, at the same moment.
PROMOTER = textwrap.dedent("""
    import sys
    from mlflow import MlflowClient
    from medimg.registry.aliases import PromotionConflict, promote
    uri, version = sys.argv[1], sys.argv[2]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.get_registered_model("medimg-classifier")  # connected before the start
    print("ready", flush=True)
    sys.stdin.read()
    try:
        promote(client, "medimg-classifier", version, "race", f"promoter {version}",
                expected_champion="1")
        print("won")
    except PromotionConflict as conflict:
        print("lost:", conflict)
""")


@pytest.mark.parametrize("store", ["registry", pytest.param("server_registry",
                                                               marks=pytest.mark.integration)])
def test_of_two_concurrent_promotions_exactly_one_wins(store, request, tmp_path: Path):
    client, uri = request.getfixturevalue(store)
    promote(client, NAME, "1", "first", "me", expected_champion=None)
    script = tmp_path / "promoter.py"
    script.write_text(PROMOTER)
    logs = {v: tmp_path / f"promoter-{v}.log" for v in ("2", "3")}
    processes = {v: subprocess.Popen([sys.executable, str(script), uri, v],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=logs[v].open("w"), text=True)
                 for v in ("2", "3")}
    for version, process in processes.items():
        assert process.stdout.readline() == "ready\n", logs[version].read_text()[-2000:]
    for process in processes.values():
        process.stdin.close()  # the start: both promoters wake together
    results = {}
    for version, process in processes.items():
        out = process.stdout.read()
        assert process.wait(timeout=120) == 0, logs[version].read_text()[-2000:]
        results[version] = out.strip().splitlines()[-1]
    assert sorted(r.split(":")[0] for r in results.values()) == ["lost", "won"], results
    loser = next(r for r in results.values() if r.startswith("lost"))
    assert "not v1 as compared" in loser
    winner = next(v for v, r in results.items() if r == "won")
    assert alias_version(client, NAME, CHAMPION) == winner
    assert alias_version(client, NAME, PREVIOUS) == "1"
    champion_moves = [e for e in audit_trail(client, NAME) if e.alias == CHAMPION]
    assert [(e.from_version, e.to_version) for e in champion_moves] == [(None, "1"), ("1", winner)]
    assert [m.name for m in client.search_registered_models()] == [NAME]  # no lock left behind


@pytest.mark.integration
def test_a_lock_left_by_a_crashed_promoter_is_broken_after_a_while(server_registry):
    client, _ = server_registry
    lock = f"{NAME}{aliases.LOCK_SUFFIX}"
    client.create_registered_model(lock, tags={
        "medimg.lock_holder": "crashed@host",
        "medimg.lock_since": str(time.time() - aliases.STALE_LOCK_SECONDS - 1)})
    promote(client, NAME, "1", "first", "me", expected_champion=None)
    assert alias_version(client, NAME, CHAMPION) == "1"
    assert [m.name for m in client.search_registered_models()] == [NAME]  # no lock left


@pytest.mark.integration
def test_a_held_lock_makes_a_promoter_wait_then_say_who_holds_it(server_registry, monkeypatch):
    client, _ = server_registry
    lock = f"{NAME}{aliases.LOCK_SUFFIX}"
    client.create_registered_model(lock, tags={"medimg.lock_holder": "ci@builder",
                                               "medimg.lock_since": str(time.time())})
    monkeypatch.setattr(aliases, "LOCK_WAIT_SECONDS", 1.0)
    with pytest.raises(MedimgError, match=r"held by ci@builder .*delete the registered model"):
        promote(client, NAME, "1", "first", "me", expected_champion=None)
    assert alias_version(client, NAME, CHAMPION) is None
    client.delete_registered_model(lock)  # the holder finishes
    promote(client, NAME, "1", "first", "me", expected_champion=None)
    assert alias_version(client, NAME, CHAMPION) == "1"
