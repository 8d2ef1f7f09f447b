"""history: queue depth and stage counters sampled by the APIs for the dashboard's charts

Revision ID: e3a9c6d2f481
Revises: 7d2c4b9e1f36
Create Date: 2026-12-05 08:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e3a9c6d2f481"
down_revision: str | None = "7d2c4b9e1f36"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "history",
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ready", sa.Integer(), nullable=False),
        sa.Column("deferred", sa.Integer(), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False),
        sa.Column("oldest_ready_age_s", sa.Float(), nullable=False),
        sa.Column("dead", sa.Integer(), nullable=False),
        sa.Column("webhooks", sa.Float(), nullable=False),
        sa.Column("processed", sa.Float(), nullable=False),
        sa.Column("classified", sa.Float(), nullable=False),
        sa.Column("acted", sa.Float(), nullable=False),
        sa.Column("failed", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("at", name=op.f("pk_history")),
    )


def downgrade() -> None:
    op.drop_table("history")
