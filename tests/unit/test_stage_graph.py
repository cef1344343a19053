"""dvc.yaml is the one stage graph: the code each stage reads is what its deps list.

Each stage's code deps are its package folder plus every module outside it that the stage's
module imports, directly or not, drawn from the code itself. A module added to a stage's imports
and not to dvc.yaml (or a dep no longer read) fails here, before DVC misses a change.
"""

from __future__ import annotations

import pytest
from support.imports import ROOT, closure, import_graph, module_files

from medimg.versioning import read_stages, stage_order

PACKAGES = {"ingest": "data", "validate": "validation", "preprocess": "preprocessing",
            "train": "training", "evaluate": "evaluation", "register": "registry"}
CODE = "${code}/"


def expected_code_deps(stage: str) -> set[str]:
    package = PACKAGES[stage]
    files = module_files()
    inside = f"medimg.{package}"
    reads = closure(import_graph(), f"{inside}.stage")
    outside = {files[m].relative_to(ROOT / "medimg").as_posix() for m in reads
               if m != inside and not m.startswith(inside + ".")}
    return {CODE + package, *(CODE + path for path in outside)}


STAGES = {s.name: s for s in read_stages(ROOT / "dvc.yaml")}


@pytest.mark.parametrize("stage", list(PACKAGES))
def test_each_stage_lists_its_package_and_every_shared_module_it_imports(stage):
    listed = {d for d in STAGES[stage].deps if d.startswith(CODE)}
    expected = expected_code_deps(stage)
    assert sorted(expected - listed) == [], f"add to dvc.yaml stage {stage}'s deps"
    assert sorted(listed - expected) == [], f"remove from dvc.yaml stage {stage}'s deps"


def test_dvc_yaml_runs_the_six_stages_in_order_under_the_names_the_cli_uses():
    order = [s.name for s in stage_order(ROOT / "dvc.yaml")]
    assert order == list(PACKAGES)
    for name in PACKAGES:
        assert STAGES[name].cmd.split()[:2] == ["medimg", name]


def test_the_stage_order_comes_from_deps_not_from_the_files_order(tmp_path):
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  b:\n    cmd: make b\n    deps: [out/a.txt]\n    outs: [out/b.txt]\n"
        "  a:\n    cmd: make a\n    outs: [out]\n"
        "  c:\n    cmd: make c\n    deps: [out/b.txt]\n    metrics: [{m.json: {cache: false}}]\n")
    assert [s.name for s in stage_order(tmp_path / "dvc.yaml")] == ["a", "b", "c"]


def test_a_cycle_in_dvc_yaml_is_refused_in_one_line(tmp_path):
    from medimg.errors import WorkspaceError

    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  a:\n    cmd: x\n    deps: [b.txt]\n    outs: [a.txt]\n"
        "  b:\n    cmd: y\n    deps: [a.txt]\n    outs: [b.txt]\n")
    with pytest.raises(WorkspaceError, match="cycle"):
        stage_order(tmp_path / "dvc.yaml")
