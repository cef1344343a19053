from __future__ import annotations

import pytest
import yaml

from medimg.errors import WorkspaceError
from medimg.workspace import init_workspace, open_workspace, template_file


def test_init_makes_a_git_and_dvc_workspace_from_the_reference_files(tmp_path):
    ws = init_workspace(tmp_path / "new")
    assert (ws.root / ".git").is_dir() and (ws.root / ".dvc").is_dir()
    assert ws.params_path.read_text() == template_file("params.yaml").read_text()
    stages = yaml.safe_load((ws.root / "dvc.yaml").read_text())
    reference = yaml.safe_load(template_file("dvc.yaml").read_text())
    assert stages["stages"] == reference["stages"]
    # the new workspace has no medimg/ folder: its code deps name the installed package
    code = stages["vars"][0]["code"]
    assert code.endswith("medimg") and (open_workspace(ws.root).root / "dvc.yaml").exists()
    from pathlib import Path

    assert (Path(code) / "training" / "train.py").is_file()
    assert open_workspace(ws.root).config.base.class_names == ["normal", "pneumonia"]


def test_init_refuses_to_overwrite(tmp_path):
    init_workspace(tmp_path / "ws")
    with pytest.raises(WorkspaceError, match="--force"):
        init_workspace(tmp_path / "ws")
    init_workspace(tmp_path / "ws", force=True)


def test_repository_root_is_a_workspace():
    root = template_file("params.yaml").parent
    ws = open_workspace(root)
    assert (ws.root / "dvc.yaml").is_file() and (ws.root / ".dvc").is_dir()


def test_a_directory_without_params_is_not_a_workspace(tmp_path):
    with pytest.raises(WorkspaceError, match="not a medimg workspace"):
        open_workspace(tmp_path)
    with pytest.raises(WorkspaceError, match="does not exist"):
        open_workspace(tmp_path / "missing")
