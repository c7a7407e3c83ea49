"""notes on the timeline (author, department, permalink), deals and their totals, open items, digest runs

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-02 10:45:00
"""

import sqlalchemy as sa
from alembic import op

import storage.models

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None

UTC = storage.models.UTCDateTime(timezone=True)
ID = sa.Uuid(as_uuid=True)
MONEY = sa.Numeric(14, 2)


def upgrade() -> None:
    with op.batch_alter_table("timeline") as batch:
        batch.add_column(sa.Column("author", sa.String(32), nullable=True))
        batch.add_column(sa.Column("department", sa.String(32), nullable=True))
        batch.add_column(sa.Column("permalink", sa.String(500), nullable=True))
    op.create_table(
        "deals",
        sa.Column("deal_id", sa.String(128), nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("amount", MONEY, nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("name_ct", sa.LargeBinary(), nullable=True),
        sa.Column("owner_department", sa.String(64), nullable=True),
        sa.Column("owner_slack_user", sa.String(32), nullable=True),
        sa.Column("source_clock", sa.JSON(), nullable=False),
        sa.Column("closed_at", UTC, nullable=True),
        sa.Column("updated_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"],
            name=op.f("fk_deals_customer_id_customers"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("deal_id", name=op.f("pk_deals")),
    )
    op.create_index(op.f("ix_deals_customer_id"), "deals", ["customer_id"])
    op.create_index("ix_deals_stage_amount", "deals", ["stage", "amount", "currency"])
    op.create_index(
        "ix_deals_department_stage", "deals", ["owner_department", "stage", "amount", "currency"]
    )
    op.create_index("ix_deals_owner_stage", "deals", ["owner_slack_user", "stage"])
    op.create_index("ix_deals_won", "deals", ["stage", "closed_at", "amount", "currency"])
    op.create_table(
        "deal_totals",
        sa.Column("owner_department", sa.String(64), nullable=False),
        sa.Column("owner_slack_user", sa.String(32), nullable=False),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.PrimaryKeyConstraint(
            "owner_department", "owner_slack_user", "stage", "currency", "month",
            name=op.f("pk_deal_totals"),
        ),
    )
    op.create_table(
        "open_items",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("item_id", sa.String(128), nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("is_open", sa.Boolean(), nullable=False),
        sa.Column("amount", MONEY, nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("owner_department", sa.String(64), nullable=True),
        sa.Column("occurred_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"],
            name=op.f("fk_open_items_customer_id_customers"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("kind", "item_id", name=op.f("pk_open_items")),
    )
    op.create_index(op.f("ix_open_items_customer_id"), "open_items", ["customer_id"])
    op.create_index("ix_open_items_open", "open_items", ["kind", "is_open"])
    op.create_table(
        "digest_runs",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("period", UTC, nullable=False),
        sa.Column("claimed_by", sa.String(36), nullable=False),
        sa.Column("claimed_at", UTC, nullable=False),
        sa.Column("posted_at", UTC, nullable=True),
        sa.Column("channel_id", sa.String(32), nullable=True),
        sa.Column("ts", sa.String(32), nullable=True),
        sa.Column("file_id", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("digest", "period", name=op.f("pk_digest_runs")),
    )


def downgrade() -> None:
    op.drop_table("digest_runs")
    op.drop_index("ix_open_items_open", table_name="open_items")
    op.drop_index(op.f("ix_open_items_customer_id"), table_name="open_items")
    op.drop_table("open_items")
    op.drop_table("deal_totals")
    for name in ("ix_deals_won", "ix_deals_owner_stage", "ix_deals_department_stage",
                 "ix_deals_stage_amount"):
        op.drop_index(name, table_name="deals")
    op.drop_index(op.f("ix_deals_customer_id"), table_name="deals")
    op.drop_table("deals")
    with op.batch_alter_table("timeline") as batch:
        batch.drop_column("permalink")
        batch.drop_column("department")
        batch.drop_column("author")
