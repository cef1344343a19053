"""The import graph, drawn from the code, points one way and has no cycles.

The layers, top to bottom:

4. entry points: ``medimg.cli`` (with ``__main__``) and the Prefect flows in ``flows/``;
3. stages: ``medimg/<package>/stage.py::run_<stage>``, one per DVC stage;
2. library modules: everything else in the packages, and top-level helpers such as
   ``medimg.tracking``;
1. ``medimg.bundle``, the trained model as one unit, which every prediction path loads;
0. what everything may use: workspace, config, settings, errors, the metric table, the decision
   rule, DVC's command line, and the pieces the bundle predicts with (the model's layers, the
   channel conversion, the image transform and the calibration).

A module may import from its own layer or below, never above; a stage never imports another
stage, and the flows never import the CLI.
"""

from __future__ import annotations

from support.imports import cycles, import_graph, package_graph

ENTRY, STAGE, LIBRARY, BUNDLE, BASE = 4, 3, 2, 1, 0
BASE_MODULES = {
    "medimg", "medimg.errors", "medimg.config", "medimg.settings", "medimg.env_names",
    "medimg.workspace",
    "medimg.versioning", "medimg.locks", "medimg.metric_table", "medimg.decision", "medimg.phi",
    "medimg.layers", "medimg.channels", "medimg.preprocessing.transforms", "medimg.calibration",
}
STAGES = ("ingest", "validate", "preprocess", "train", "evaluate", "register")


def layer(module: str) -> int:
    if module in ("medimg.cli", "medimg.__main__") or module.split(".")[0] == "flows":
        return ENTRY
    if module.endswith(".stage"):
        return STAGE
    if module == "medimg.bundle":
        return BUNDLE
    if module in BASE_MODULES:
        return BASE
    return LIBRARY


GRAPH = import_graph()


def test_every_import_points_down_or_sideways_never_up():
    upward = sorted(f"{source} ({layer(source)}) -> {target} ({layer(target)})"
                    for source, targets in GRAPH.items() for target in targets
                    if layer(target) > layer(source))
    assert upward == []


def test_a_stage_never_imports_another_stage_and_the_flows_never_import_the_cli():
    sideways = sorted(f"{source} -> {target}" for source, targets in GRAPH.items()
                      for target in targets
                      if layer(source) == layer(target) == STAGE
                      or (source.startswith("flows") and target == "medimg.cli"))
    assert sideways == []


def test_no_import_cycles_between_modules_or_between_packages():
    assert cycles(GRAPH) == []
    assert cycles(package_graph(GRAPH)) == []


def test_each_stage_has_one_entry_named_after_it():
    import importlib

    packages = {"ingest": "data", "validate": "validation", "preprocess": "preprocessing",
                "train": "training", "evaluate": "evaluation", "register": "registry"}
    for stage in STAGES:
        module = importlib.import_module(f"medimg.{packages[stage]}.stage")
        entries = [name for name in vars(module) if name.startswith("run_")
                   and getattr(vars(module)[name], "__module__", "") == module.__name__]
        assert entries == [f"run_{stage}"], module.__name__


def test_the_checks_would_catch_an_upward_import_and_a_cycle():
    # the same rules on a planted graph: a library module importing a stage, and a loop
    planted = {"medimg.data.images": {"medimg.training.stage"},
               "medimg.training.stage": {"medimg.data.images"}}
    assert any(layer(t) > layer(s) for s, ts in planted.items() for t in ts)
    assert cycles(planted) == [["medimg.data.images", "medimg.training.stage"]]
