"""runs.eta_guess; indexes on runs.parent_id and run_dependencies.depends_on_id

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('eta_guess', sa.Boolean(), nullable=True))
        batch_op.create_index(batch_op.f('ix_runs_parent_id'), ['parent_id'], unique=False)
    op.create_index(op.f('ix_run_dependencies_depends_on_id'), 'run_dependencies', ['depends_on_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_run_dependencies_depends_on_id'), table_name='run_dependencies')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_runs_parent_id'))
        batch_op.drop_column('eta_guess')
