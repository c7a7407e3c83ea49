"""audit entries name the key generation that sealed them; indexes for the read audit

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 10:40:00

Entries already sealed with the audit key (seq >= audit_keys.keyed_from) are marked with its
generation (the row's id), so that deleting the key row later is a verify failure naming it
rather than a quiet downgrade of those entries to "from before the key".
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("key_generation", sa.Integer(), nullable=True))
        batch.create_index("ix_audit_log_customer", ["customer_id", "action"])
        batch.create_index("ix_audit_log_actor", ["actor", "action", "at"])
    op.execute(
        "UPDATE audit_log SET key_generation = (SELECT MIN(id) FROM audit_keys) "
        "WHERE seq >= (SELECT MIN(keyed_from) FROM audit_keys)"
    )


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_index("ix_audit_log_actor")
        batch.drop_index("ix_audit_log_customer")
        batch.drop_column("key_generation")
