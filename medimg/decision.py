"""How a classifier turns probabilities into a class: the decision rule, named truthfully.

Two classes: a threshold on the last (positive) class's probability. More classes: the class
with the highest probability; no threshold is used, so none is shown anywhere.
"""

from __future__ import annotations

ARGMAX = "argmax"
THRESHOLD = "threshold"


def decision_rule(class_names: list[str]) -> str:
    """``threshold`` for two classes, ``argmax`` for more."""
    return THRESHOLD if len(class_names) == 2 else ARGMAX
