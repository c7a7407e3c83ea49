"""alerts are delivered per channel: channel leases replace customer leases, a shared posting
budget per channel, storm roll-ups, and threads whose top-level message is their first alert

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 10:45:00
"""

import sqlalchemy as sa
from alembic import op

import storage.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("delivery_leases")
    op.create_table(
        "channel_leases",
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(36), nullable=False),
        sa.Column("until", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("channel_id", name=op.f("pk_channel_leases")),
    )
    op.create_table(
        "channel_budgets",
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("channel_id", name=op.f("pk_channel_budgets")),
    )
    op.create_table(
        "channel_rollups",
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("ts", sa.String(32), nullable=False),
        sa.Column("opened_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("listed", sa.Integer(), nullable=False),
        sa.Column("shown_at", storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("channel_id", name=op.f("pk_channel_rollups")),
    )
    with op.batch_alter_table("customer_threads") as batch:
        batch.add_column(sa.Column("opened_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("updates", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("shown_updates", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("changed_at", storage.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch.add_column(
            sa.Column("shown_at", storage.models.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("customer_threads") as batch:
        for column in ("shown_at", "changed_at", "shown_updates", "updates", "opened_by"):
            batch.drop_column(column)
    op.drop_table("channel_rollups")
    op.drop_table("channel_budgets")
    op.drop_table("channel_leases")
    op.create_table(
        "delivery_leases",
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("owner", sa.String(36), nullable=False),
        sa.Column("until", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_delivery_leases_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_delivery_leases")),
    )
