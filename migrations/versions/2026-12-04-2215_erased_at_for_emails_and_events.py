"""erased_at on emails and webhook_events: content removed by an erasure or by retention

Revision ID: 7c1e0f2a9b3d
Revises: 5ad6c34de408
Create Date: 2026-12-04 22:15:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c1e0f2a9b3d"
down_revision: str | None = "5ad6c34de408"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("emails", sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("webhook_events", sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
    # Retention looks for old rows by time. BRIN, not b-tree: it costs next to nothing on the hot path's inserts and
    # updates (every non-HOT update of an email or event would add a b-tree entry), and time-ordered rows are what
    # BRIN is for.
    op.create_index("ix_emails_created_at_brin", "emails", ["created_at"], postgresql_using="brin")
    op.create_index("ix_webhook_events_received_at_brin", "webhook_events", ["received_at"], postgresql_using="brin")
    # The body is stored once, in emails.body: drop it from what is already in emails.raw and in processed events.
    op.execute("UPDATE emails SET raw = raw - 'body' WHERE raw ? 'body'")
    op.execute(
        "UPDATE webhook_events SET payload = payload #- '{data,object,body}' "
        "WHERE status = 'processed' AND payload->'data'->'object' ? 'body'"
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_events_received_at_brin", table_name="webhook_events")
    op.drop_index("ix_emails_created_at_brin", table_name="emails")
    op.drop_column("webhook_events", "erased_at")
    op.drop_column("emails", "erased_at")
