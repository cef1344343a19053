"""The logged model's pip requirements: everything its code imports, pinned to what trained it,
with the one TensorFlow wheel each platform has. That the list resolves on those platforms is
tested against PyPI in tests/unit/test_platforms.py."""

from __future__ import annotations

import ast
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import medimg
from medimg.registry.requirements import pip_requirements

PACKAGE_ROOT = Path(medimg.__file__).parent
TENSORFLOWS = {"tensorflow", "tensorflow-cpu"}


def _module_file(module: str) -> Path | None:
    path = PACKAGE_ROOT.parent.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _third_party_imports(entry: str) -> set[str]:
    """Top-level names of what the model's code imports, following medimg's own imports (at
    module level and inside functions) from ``entry``, MLflow's entry to the model."""
    todo, seen, imported = [entry], set(), set()
    while todo:
        module = todo.pop()
        if module in seen or (path := _module_file(module)) is None:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run too
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "medimg":
                    todo.append(name)
                elif top not in sys.stdlib_module_names:
                    imported.add(top)
    return imported


def test_the_model_requires_every_distribution_its_code_imports():
    required = {canonicalize_name(Requirement(line).name) for line in pip_requirements()}
    imported = _third_party_imports("medimg.serving.mlflow_model")
    assert {"keras", "mlflow", "numpy", "pandas", "PIL", "cv2", "pydicom", "yaml"} <= imported
    owners = packages_distributions()
    missing = {name: owners.get(name) for name in imported
               if not {canonicalize_name(d) for d in owners.get(name, [])} & required}
    assert not missing, f"the model's code imports these, its requirements lack them: {missing}"
    assert required >= TENSORFLOWS  # keras's backend, never imported by name


@pytest.mark.parametrize(("platform", "machine", "wheel"), [
    ("linux", "x86_64", "tensorflow-cpu"), ("linux", "aarch64", "tensorflow"),
    ("darwin", "arm64", "tensorflow"), ("win32", "AMD64", "tensorflow")])
def test_each_platform_gets_one_tensorflow_of_the_version_that_trained(platform, machine, wheel):
    environment = {"sys_platform": platform, "platform_machine": machine}
    requirements = [Requirement(line) for line in pip_requirements()]
    applying = [r for r in requirements if r.marker is None or r.marker.evaluate(environment)]
    tensorflows = [r for r in applying if r.name in TENSORFLOWS]
    assert [r.name for r in tensorflows] == [wheel]
    try:
        trained = version("tensorflow-cpu")
    except PackageNotFoundError:
        trained = version("tensorflow")
    assert str(tensorflows[0].specifier) == f"=={trained}"
    for requirement in applying:
        if requirement.name not in TENSORFLOWS:
            assert str(requirement.specifier) == f"=={version(requirement.name)}"
