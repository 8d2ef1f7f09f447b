"""stage chain, actions, dead letters, cron runs, grant sync state

Revision ID: 32a179ec47cf
Revises: 85fd36317bc5
Create Date: 2026-11-29 12:23:48.271677+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "32a179ec47cf"
down_revision: str | None = "85fd36317bc5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, not imported: a migration must not change when the models do.
EVENT_STATUSES = ("received", "queued", "processing", "processed", "ignored", "parked", "dead")
OLD_EVENT_STATUSES = ("received", "queued", "processing", "processed", "ignored", "failed")
PIPELINE_STATES = ("classify", "act", "done", "missing", "deleted")


def upgrade() -> None:
    op.create_table(
        "cron_runs",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("tick_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("worker", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cron_runs")),
        sa.UniqueConstraint("name", "tick_at", name=op.f("uq_cron_runs_name_tick_at")),
    )
    op.create_table(
        "actions",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("email_id", sa.BigInteger(), nullable=False),
        sa.Column("grant_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("params", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="planned", nullable=False),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('planned', 'executing', 'done', 'dry_run', 'failed')", name=op.f("ck_actions_status")
        ),
        sa.ForeignKeyConstraint(
            ["email_id"], ["emails.id"], name=op.f("fk_actions_email_id_emails"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actions")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_actions_idempotency_key")),
    )
    op.create_index("ix_actions_email_id", "actions", ["email_id"], unique=False)
    op.create_table(
        "stage_runs",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("stage", sa.Text(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("email_id", sa.BigInteger(), nullable=True),
        sa.Column("grant_id", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("job_id", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("stage IN ('process', 'classify', 'act')", name=op.f("ck_stage_runs_stage")),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'retrying', 'parked', 'dead', 'skipped')",
            name=op.f("ck_stage_runs_status"),
        ),
        sa.ForeignKeyConstraint(
            ["email_id"], ["emails.id"], name=op.f("fk_stage_runs_email_id_emails"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["webhook_events.id"], name=op.f("fk_stage_runs_event_id_webhook_events"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stage_runs")),
    )
    op.create_index("ix_stage_runs_email_id", "stage_runs", ["email_id"], unique=False)
    op.create_index("ix_stage_runs_event_id", "stage_runs", ["event_id"], unique=False)
    op.create_index("ix_stage_runs_status_stage", "stage_runs", ["status", "stage"], unique=False)
    op.add_column("emails", sa.Column("missing_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("emails", sa.Column("classification", sa.Text(), nullable=True))
    op.add_column("emails", sa.Column("classified_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("emails", sa.Column("pipeline_state", sa.Text(), server_default="classify", nullable=False))
    op.add_column(
        "emails",
        sa.Column("pipeline_updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.add_column("emails", sa.Column("stage_attempts", sa.Integer(), server_default="0", nullable=False))
    op.add_column("emails", sa.Column("last_error", sa.Text(), nullable=True))
    op.add_column("emails", sa.Column("dead_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("emails", sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_emails_pipeline_state_pipeline_updated_at",
        "emails",
        ["pipeline_state", "pipeline_updated_at"],
        unique=False,
    )
    op.add_column("grants", sa.Column("sync_cursor", sa.DateTime(timezone=True), nullable=True))
    op.add_column("grants", sa.Column("last_synced_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("grants", sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("grants", sa.Column("paused_reason", sa.Text(), nullable=True))
    op.add_column("grants", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint("pipeline_state", "emails", f"pipeline_state IN {PIPELINE_STATES!r}")
    # `failed` becomes `dead`: a dead letter, kept with its error and replayable.
    op.drop_constraint(op.f("ck_webhook_events_status"), "webhook_events", type_="check")
    op.execute("UPDATE webhook_events SET status = 'dead' WHERE status = 'failed'")
    op.create_check_constraint("status", "webhook_events", f"status IN {EVENT_STATUSES!r}")


def downgrade() -> None:
    op.drop_constraint(op.f("ck_webhook_events_status"), "webhook_events", type_="check")
    op.execute("UPDATE webhook_events SET status = 'failed' WHERE status IN ('dead', 'parked')")
    op.create_check_constraint("status", "webhook_events", f"status IN {OLD_EVENT_STATUSES!r}")
    op.drop_constraint(op.f("ck_emails_pipeline_state"), "emails", type_="check")
    op.drop_column("grants", "deleted_at")
    op.drop_column("grants", "paused_reason")
    op.drop_column("grants", "paused_at")
    op.drop_column("grants", "last_synced_at")
    op.drop_column("grants", "sync_cursor")
    op.drop_index("ix_emails_pipeline_state_pipeline_updated_at", table_name="emails")
    op.drop_column("emails", "parked_at")
    op.drop_column("emails", "dead_at")
    op.drop_column("emails", "last_error")
    op.drop_column("emails", "stage_attempts")
    op.drop_column("emails", "pipeline_updated_at")
    op.drop_column("emails", "pipeline_state")
    op.drop_column("emails", "classified_at")
    op.drop_column("emails", "classification")
    op.drop_column("emails", "missing_at")
    op.drop_index("ix_stage_runs_status_stage", table_name="stage_runs")
    op.drop_index("ix_stage_runs_event_id", table_name="stage_runs")
    op.drop_index("ix_stage_runs_email_id", table_name="stage_runs")
    op.drop_table("stage_runs")
    op.drop_index("ix_actions_email_id", table_name="actions")
    op.drop_table("actions")
    op.drop_table("cron_runs")
