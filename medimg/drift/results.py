"""Drift results: one feature's comparison, and the report of them all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from medimg.config import DriftConfig

Verdict = Literal["drift", "ok", "too few", "not recorded"]
Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's comparison; the values are kept for the plot, not for the JSON."""

    name: str
    kind: Kind
    verdict: Verdict
    n_reference: int
    n_incoming: int
    statistic: float | None = None
    p_value: float | None = None
    psi: float | None = None
    reference_values: Any = field(default=(), repr=False)
    incoming_values: Any = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "statistic": self.statistic,
                "p_value": self.p_value, "psi": self.psi, "verdict": self.verdict,
                "n_reference": self.n_reference, "n_incoming": self.n_incoming}


@dataclass(frozen=True)
class DriftReport:
    """Every feature's comparison, and the thresholds they were judged by."""

    features: list[FeatureDrift]
    config: DriftConfig

    @property
    def drifted(self) -> list[str]:
        """The features whose verdict is drift."""
        return [f.name for f in self.features if f.verdict == "drift"]

    @property
    def enough_data(self) -> bool:
        """Whether every recorded feature had at least ``min_samples`` values on both sides."""
        return all(f.verdict != "too few" for f in self.features)

    def feature(self, name: str) -> FeatureDrift:
        return next(f for f in self.features if f.name == name)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready report."""
        return {"features": [f.to_dict() for f in self.features], "drifted": self.drifted,
                "enough_data": self.enough_data, "config": self.config.model_dump(mode="json")}
