"""pauses: operators' pauses of everything, a grant or a stage, honoured by every worker

Revision ID: 5b8f3e6a0c12
Revises: 9a4e7c2d1b05
Create Date: 2026-12-05 07:05:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b8f3e6a0c12"
down_revision: str | None = "9a4e7c2d1b05"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pauses",
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), server_default="", nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("paused_by", sa.Text(), nullable=False),
        sa.CheckConstraint("scope IN ('all', 'grant', 'stage')", name=op.f("ck_pauses_scope")),
        sa.PrimaryKeyConstraint("scope", "target", name=op.f("pk_pauses")),
    )


def downgrade() -> None:
    op.drop_table("pauses")
