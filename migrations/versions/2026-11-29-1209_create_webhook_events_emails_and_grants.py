"""create webhook_events, emails and grants

Revision ID: 85fd36317bc5
Revises:
Create Date: 2026-11-29 12:09:48.685010+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "85fd36317bc5"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "emails",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("grant_id", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("thread_id", sa.Text(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("from_", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("from_email", sa.Text(), nullable=True),
        sa.Column("to", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("cc", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("bcc", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("reply_to", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("snippet", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("folders", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("unread", sa.Boolean(), nullable=True),
        sa.Column("starred", sa.Boolean(), nullable=True),
        sa.Column("raw", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("state_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_emails")),
        sa.UniqueConstraint("grant_id", "message_id", name=op.f("uq_emails_grant_id_message_id")),
    )
    op.create_table(
        "grants",
        sa.Column("grant_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="active", nullable=False),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("provider", sa.Text(), nullable=True),
        sa.Column("state_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("status IN ('active', 'expired', 'deleted')", name=op.f("ck_grants_status")),
        sa.PrimaryKeyConstraint("grant_id", name=op.f("pk_grants")),
    )
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("notification_id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("grant_id", sa.Text(), nullable=True),
        sa.Column("object_id", sa.Text(), nullable=True),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivery_attempt", sa.Integer(), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.Text(), server_default="received", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('received', 'queued', 'processing', 'processed', 'ignored', 'failed')",
            name=op.f("ck_webhook_events_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
        sa.UniqueConstraint("notification_id", name=op.f("uq_webhook_events_notification_id")),
    )
    op.create_index("ix_webhook_events_grant_id_object_id", "webhook_events", ["grant_id", "object_id"], unique=False)
    op.create_index("ix_webhook_events_status_updated_at", "webhook_events", ["status", "updated_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_webhook_events_status_updated_at", table_name="webhook_events")
    op.drop_index("ix_webhook_events_grant_id_object_id", table_name="webhook_events")
    op.drop_table("webhook_events")
    op.drop_table("grants")
    op.drop_table("emails")
