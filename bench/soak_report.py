"""What a soak counted, and its table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Report:
    notifications: int = 0
    deliveries_sent: int = 0  # including Nylas-style retries of deliveries not answered 2xx
    deliveries_refused: int = 0  # non-2xx or no answer (retried later)
    acknowledged: int = 0  # distinct notifications answered 2xx
    stored: int = 0
    processed: int = 0
    dead: int = 0
    duplicates_answered: int = 0
    messages: int = 0
    emails: int = 0
    stale_emails: int = 0  # not in the latest state sent
    lost: int = 0  # acknowledged but not stored
    double_drafts: int = 0
    process_restarts: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    settled_after_last_fault_s: float = 0.0

    def table(self) -> str:
        rows = [
            ("notifications (distinct)", self.notifications),
            ("deliveries sent (with retries)", self.deliveries_sent),
            ("deliveries refused, then retried", self.deliveries_refused),
            ("acknowledged (2xx)", self.acknowledged),
            ("stored", self.stored),
            ("processed", self.processed),
            ("dead letters", self.dead),
            ("duplicates answered", self.duplicates_answered),
            ("messages / email rows", f"{self.messages} / {self.emails}"),
            ("emails not in their latest state", self.stale_emails),
            ("lost (acknowledged, not stored)", self.lost),
            ("drafts created twice", self.double_drafts),
            ("processes restarted", self.process_restarts),
            ("settled after the last fault", f"{self.settled_after_last_fault_s:.1f} s"),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"  {name:<{width}}  {value}" for name, value in rows]
        lines.append(
            "  faults (serving again after): "
            + ", ".join(f"{f['fault']} at {f['at']:.0f}s ({f['serving_again_after_s']:.1f}s)" for f in self.faults)
        )
        return "\n".join(lines)
