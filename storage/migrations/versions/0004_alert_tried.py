"""alerts remember the delivery round that tried to post them

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 09:30:00
"""

import sqlalchemy as sa
from alembic import op

import storage.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alert_deliveries") as batch:
        batch.add_column(sa.Column("tried_in", sa.String(32), nullable=True))
        batch.add_column(sa.Column("tried_at", storage.models.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alert_deliveries") as batch:
        batch.drop_column("tried_at")
        batch.drop_column("tried_in")
