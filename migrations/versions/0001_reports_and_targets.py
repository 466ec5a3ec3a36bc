"""reports and targets

Revision ID: 0001
Revises: 
Create Date: 2026-11-23
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import hotline.db

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('target',
    sa.Column('id', hotline.db.BigIntId, autoincrement=True, nullable=False),
    sa.Column('canonical_url', sa.Text(), nullable=False),
    sa.Column('url_sha256', sa.String(length=64), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('registered_domain', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('status_reason', sa.String(length=64), nullable=True),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('report_count', sa.Integer(), nullable=False),
    sa.Column('first_reported_at', hotline.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_reported_at', hotline.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status_changed_at', hotline.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('handed_over_at', hotline.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('url_sha256')
    )
    with op.batch_alter_table('target', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_target_registered_domain'), ['registered_domain'], unique=False)
        batch_op.create_index('ix_target_status_handed_over', ['status', 'handed_over_at'], unique=False)

    op.create_table('report',
    sa.Column('id', hotline.db.BigIntId, autoincrement=True, nullable=False),
    sa.Column('receipt_hash', sa.String(length=64), nullable=False),
    sa.Column('target_id', sa.BigInteger(), nullable=False),
    sa.Column('category', sa.String(length=20), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('language', sa.String(length=35), nullable=True),
    sa.Column('contact_encrypted', sa.Text(), nullable=True),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('created_at', hotline.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['target_id'], ['target.id'], ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('receipt_hash')
    )
    with op.batch_alter_table('report', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_report_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_report_target_id'), ['target_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('report', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_report_target_id'))
        batch_op.drop_index(batch_op.f('ix_report_created_at'))

    op.drop_table('report')
    with op.batch_alter_table('target', schema=None) as batch_op:
        batch_op.drop_index('ix_target_status_handed_over')
        batch_op.drop_index(batch_op.f('ix_target_registered_domain'))

    op.drop_table('target')
