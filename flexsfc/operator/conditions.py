"""Status conditions in the shape of metav1.Condition, with stable transition times."""

import datetime
from dataclasses import dataclass
from typing import Any


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str  # CamelCase, machine-readable
    message: str


def merge_conditions(
    current: list[dict[str, Any]] | None, wanted: list[Condition], generation: int | None
) -> list[dict[str, Any]]:
    """The conditions list to write: lastTransitionTime moves only when a condition's status flips."""
    previous = {c.get("type"): c for c in current or [] if isinstance(c, dict)}
    merged = []
    for condition in wanted:
        status = "True" if condition.status else "False"
        before = previous.get(condition.type)
        unchanged = before is not None and before.get("status") == status
        entry = {
            "type": condition.type,
            "status": status,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": before["lastTransitionTime"] if before and unchanged else now_rfc3339(),
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        merged.append(entry)
    return merged
