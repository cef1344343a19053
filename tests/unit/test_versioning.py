"""DVC's view of the stage graph: code deps outside the workspace stay up to date when Python
writes byte-code caches into them (real git and DVC repositories in tmp dirs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medimg.versioning import compile_outside_deps, first_commit, run_dvc, stage_changes

pytestmark = pytest.mark.integration  # runs `dvc repro` and `dvc status`

DVC_YAML = """\
vars:
  - code: {code}
stages:
  build:
    cmd: python -c "open('out.txt', 'w').write('built')"
    deps:
      - ${{code}}/pkg
      - src
    outs:
      - out.txt
"""


@pytest.fixture
def repo_with_outside_code(tmp_path: Path) -> tuple[Path, Path]:
    """A workspace whose stage depends on a package folder elsewhere (as `medimg init` does)."""
    code = tmp_path / "installed"
    (code / "pkg" / "sub").mkdir(parents=True)
    (code / "pkg" / "a.py").write_text("A = 1\n")
    (code / "pkg" / "sub" / "__init__.py").write_text("")
    (code / "pkg" / "sub" / "b.py").write_text("B = 2\n")
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "inside.py").write_text("C = 3\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    run_dvc(root, "init", "-q")
    (root / ".dvcignore").write_text("__pycache__/\n*.pyc\n")
    (root / "dvc.yaml").write_text(DVC_YAML.format(code=code.as_posix()))
    return root, code


def _import_everything(code: Path) -> None:
    """What a later command does: import the package, and Python caches its byte-code."""
    subprocess.run([sys.executable, "-c", "import a, sub.b"], cwd=code / "pkg", check=True,
                   env={"PYTHONPATH": str(code / "pkg")})


def test_byte_code_written_after_a_run_leaves_the_stage_up_to_date(repo_with_outside_code):
    root, code = repo_with_outside_code
    assert compile_outside_deps(root) == [(code / "pkg").resolve()]  # not src: inside
    run_dvc(root, "repro", "-q")
    _import_everything(code)
    assert stage_changes(root, "build") == []
    assert list((code / "pkg" / "sub" / "__pycache__").glob("b.*.pyc"))
    assert not (root / "src" / "__pycache__").exists()


def test_without_compiling_first_the_same_import_reads_as_a_code_change(repo_with_outside_code):
    # the control: what compile_outside_deps prevents
    root, code = repo_with_outside_code
    run_dvc(root, "repro", "-q")
    _import_everything(code)
    assert any("pkg" in change for change in stage_changes(root, "build"))


def test_a_source_change_still_re_runs_the_stage(repo_with_outside_code):
    root, code = repo_with_outside_code
    compile_outside_deps(root)
    run_dvc(root, "repro", "-q")
    (code / "pkg" / "a.py").write_text("A = 10\n")
    compile_outside_deps(root)
    assert any("pkg" in change for change in stage_changes(root, "build"))


def test_the_first_commit_holds_medimg_s_files_only_whatever_else_is_staged(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text("base: {}\n")
    raw = tmp_path / "data" / "raw" / "Doe^Jane.png"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(b"pixels")
    subprocess.run(["git", "add", "data/raw/Doe^Jane.png"], cwd=tmp_path, check=True)
    assert first_commit(tmp_path)
    listed = subprocess.run(["git", "ls-tree", "-r", "--name-only", "HEAD"], cwd=tmp_path,
                            capture_output=True, text=True, check=True).stdout.split()
    assert listed == ["params.yaml"]
    staged = subprocess.run(["git", "diff", "--cached", "--name-only"], cwd=tmp_path,
                            capture_output=True, text=True, check=True).stdout.split()
    assert staged == ["data/raw/Doe^Jane.png"]  # the user's own staging is left as it was
    assert not first_commit(tmp_path)  # once only
