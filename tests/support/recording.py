"""A config that records which params a stage reads, for comparing with dvc.yaml.

:func:`recording` wraps a real :class:`medimg.config.Config`. Reading a value records its
dotted key (``train.epochs``); calling a method of a section (``model_dump``, ``digest``)
records the whole section (``preprocess.*``), since the method reads every key of it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Recording:
    def __init__(self, target: BaseModel, path: str, reads: set[str]) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_reads", reads)

    def _key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if isinstance(value, BaseModel):
            return Recording(value, self._key(name), self._reads)
        if callable(value):  # a method reads the whole section
            self._reads.add(self._key("*") if self._path else "*")
            return value
        self._reads.add(self._key(name))
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("params are read-only")

    def __eq__(self, other: object) -> bool:
        self._reads.add(self._key("*") if self._path else "*")
        return self._target == (other._target if isinstance(other, Recording) else other)

    __hash__ = None  # type: ignore[assignment]


def recording(config: BaseModel) -> tuple[Any, set[str]]:
    """``(proxy, reads)``: pass the proxy where the config goes; ``reads`` fills up."""
    reads: set[str] = set()
    return Recording(config, "", reads), reads


def covered(key: str, listed: tuple[str, ...]) -> bool:
    """Whether a read key is under one of dvc.yaml's params entries."""
    if "params.yaml:*" in listed:
        return True
    section = key.removesuffix(".*")
    return any(section == entry or section.startswith(entry + ".") for entry in listed)


def unread(listed: tuple[str, ...], reads: set[str]) -> list[str]:
    """dvc.yaml params entries that the stage never reads (stale deps re-run it for nothing)."""
    stale = []
    for entry in listed:
        if entry == "params.yaml:*":
            continue
        if not any(r.removesuffix(".*") == entry or r.startswith(entry + ".")
                   or (entry.startswith(r.removesuffix("*")) and r.endswith("*")) for r in reads):
            stale.append(entry)
    return stale
