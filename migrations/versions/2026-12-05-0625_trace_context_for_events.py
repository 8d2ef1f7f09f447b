"""trace_context on webhook_events: the W3C traceparent of the request that stored it, for the worker's spans

Revision ID: 3f6d2a1c8e74
Revises: bcc8946a916e
Create Date: 2026-12-05 06:25:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3f6d2a1c8e74"
down_revision: str | None = "bcc8946a916e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: a metadata-only change however large the table, and NULL costs nothing untraced.
    op.add_column("webhook_events", sa.Column("trace_context", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("webhook_events", "trace_context")
