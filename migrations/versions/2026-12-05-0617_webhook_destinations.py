"""webhook_destinations: the application's destinations at Nylas as the health check saw them

Revision ID: bcc8946a916e
Revises: 7c1e0f2a9b3d
Create Date: 2026-12-05 06:17:10.573926+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "bcc8946a916e"
down_revision: str | None = "7c1e0f2a9b3d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_destinations",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("status_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unhealthy_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("backfilled_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'failing', 'failed', 'pause')", name=op.f("ck_webhook_destinations_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_destinations")),
    )


def downgrade() -> None:
    op.drop_table("webhook_destinations")
