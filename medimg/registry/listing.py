"""The registered model's versions as people read them: aliases, test metrics, lineage."""

from __future__ import annotations

import time
from dataclasses import dataclass

from medimg.decision import THRESHOLD


@dataclass(frozen=True)
class VersionRow:
    """One registered version, with what its run measured on the test split."""

    version: str
    aliases: tuple[str, ...]
    f1: float | None
    recall: float | None
    threshold: float | None
    decision_rule: str
    data_version: str
    created_utc: str

    def line(self) -> str:
        def number(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        rule = (f"threshold {number(self.threshold)}" if self.decision_rule == THRESHOLD
                else "arg-max")
        return (f"v{self.version}  [{', '.join(self.aliases) or 'no alias'}]  "
                f"test F1 {number(self.f1)}  recall {number(self.recall)}  {rule}  "
                f"data {self.data_version[:12]}  {self.created_utc} UTC")


def list_versions(client, name: str) -> list[VersionRow]:
    """Every version of ``name``, oldest first."""
    found = client.search_model_versions(f"name='{name}'")
    rows = []
    for listed in sorted(found, key=lambda v: int(v.version)):
        # search results leave aliases out; the version itself carries them
        version = client.get_model_version(name, listed.version)
        metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
        tags = version.tags or {}
        rows.append(VersionRow(
            version=str(version.version),
            aliases=tuple(sorted(version.aliases)),
            f1=metrics.get("test_f1"),
            recall=metrics.get("test_recall"),
            threshold=metrics.get("test_threshold"),
            decision_rule=tags.get("decision_rule", THRESHOLD),
            data_version=tags.get("data_version", "-"),
            created_utc=time.strftime("%Y-%m-%d %H:%M",
                                      time.gmtime(version.creation_timestamp / 1000)),
        ))
    return rows
