"""purged events, partial indexes for dead and parked emails

Revision ID: 5ad6c34de408
Revises: 32a179ec47cf
Create Date: 2026-11-29 12:42:39.356023+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5ad6c34de408"
down_revision: str | None = "32a179ec47cf"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, not imported: a migration must not change when the models do.
EVENT_STATUSES = ("received", "queued", "processing", "processed", "ignored", "parked", "dead", "purged")
PREVIOUS_EVENT_STATUSES = ("received", "queued", "processing", "processed", "ignored", "parked", "dead")


def upgrade() -> None:
    op.add_column("emails", sa.Column("first_received_at", sa.DateTime(timezone=True), nullable=True))
    # `purged`: removed from the queue by an operator; the sweeper leaves it alone.
    op.drop_constraint(op.f("ck_webhook_events_status"), "webhook_events", type_="check")
    op.create_check_constraint("status", "webhook_events", f"status IN {EVENT_STATUSES!r}")
    op.create_index(
        "ix_emails_dead_at", "emails", ["dead_at"], unique=False, postgresql_where=sa.text("dead_at IS NOT NULL")
    )
    op.create_index(
        "ix_emails_parked_at", "emails", ["parked_at"], unique=False, postgresql_where=sa.text("parked_at IS NOT NULL")
    )


def downgrade() -> None:
    op.drop_column("emails", "first_received_at")
    op.drop_constraint(op.f("ck_webhook_events_status"), "webhook_events", type_="check")
    op.execute("UPDATE webhook_events SET status = 'ignored' WHERE status = 'purged'")
    op.create_check_constraint("status", "webhook_events", f"status IN {PREVIOUS_EVENT_STATUSES!r}")
    op.drop_index("ix_emails_parked_at", table_name="emails", postgresql_where=sa.text("parked_at IS NOT NULL"))
    op.drop_index("ix_emails_dead_at", table_name="emails", postgresql_where=sa.text("dead_at IS NOT NULL"))
