"""training progress on runs: step of total, ETA, latest loss, worker

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("step", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("total_steps", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("eta_seconds", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("latest_loss", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("worker", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        for column in ("worker", "latest_loss", "eta_seconds", "total_steps", "step"):
            batch_op.drop_column(column)
