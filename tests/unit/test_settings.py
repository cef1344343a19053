"""One source for settings: the environment is read in medimg/settings.py and nowhere else."""

from __future__ import annotations

import ast
import re

from support.imports import ROOT, module_files

from medimg.settings import Settings, note_exported, read_settings


def _environment_uses(path) -> list[str]:
    """``os.environ`` / ``os.getenv`` / ``os.putenv`` in a file, as ``line: text``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv") and (
                isinstance(node.value, ast.Name) and node.value.id == "os"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_module_but_settings_reads_or_writes_the_environment():
    uses = [use for name, path in module_files().items() if name != "medimg.settings"
            for use in _environment_uses(path)]
    assert uses == []


def test_every_variable_is_documented_in_env_example():
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(),
                                re.M))
    variables = {field.validation_alias.choices[0] for field in Settings.model_fields.values()}
    assert variables - documented == set()
    assert "MEDIMG_WORKSPACE" in documented  # read by the CLI's --workspace option


def test_settings_come_from_the_environment_once_and_overrides_win(monkeypatch):
    monkeypatch.setenv("MEDIMG_PSEUDONYM_KEY", "  a-key-of-sixteen-chars ")
    monkeypatch.setenv("MEDIMG_ACTOR", "scheduler")
    settings = read_settings()
    monkeypatch.setenv("MEDIMG_ACTOR", "someone-else")  # read once: a later change is not seen
    assert settings.actor == "scheduler"
    assert settings.key_bytes() == b"a-key-of-sixteen-chars"
    assert "a-key" not in repr(settings)  # the key is a secret, never printed
    assert read_settings(actor="cron").actor == "cron"


def test_a_uri_mlflow_exported_for_a_workspace_is_not_taken_for_the_users(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/ws/mlflow.db")
    note_exported("MLFLOW_TRACKING_URI", "sqlite:////tmp/ws/mlflow.db")
    try:
        assert read_settings().mlflow_tracking_uri is None
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
        assert read_settings().mlflow_tracking_uri == "http://mlflow.internal:5000"
    finally:
        note_exported("MLFLOW_TRACKING_URI", None)
