"""grants.nylas_rate: an operator's Nylas call rate for one grant, changed at runtime

Revision ID: 7d2c4b9e1f36
Revises: 5b8f3e6a0c12
Create Date: 2026-12-05 07:20:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7d2c4b9e1f36"
down_revision: str | None = "5b8f3e6a0c12"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("grants", sa.Column("nylas_rate", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("grants", "nylas_rate")
