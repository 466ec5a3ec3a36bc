"""triage: media, sightings, sites, hash lists, hosting

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import hotline.db

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('hash_list',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('own', sa.Boolean(), nullable=False),
    sa.Column('created_at', hotline.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('media',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('sha1', sa.String(length=40), nullable=False),
    sa.Column('md5', sa.String(length=32), nullable=False),
    sa.Column('phash', sa.String(length=16), nullable=True),
    sa.Column('pdq', sa.String(length=64), nullable=True),
    sa.Column('pdq_quality', sa.Integer(), nullable=True),
    sa.Column('mime', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.Enum('image', 'video', 'vector', name='mediakind', native_enum=False, length=20), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('frames', sa.Integer(), nullable=True),
    sa.Column('first_seen_at', hotline.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sha256')
    )
    with op.batch_alter_table('media', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_media_md5'), ['md5'], unique=False)
        batch_op.create_index(batch_op.f('ix_media_sha1'), ['sha1'], unique=False)

    op.create_table('site',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('registered_domain', sa.String(length=255), nullable=False),
    sa.Column('target_count', sa.Integer(), nullable=False),
    sa.Column('confirmed_count', sa.Integer(), nullable=False),
    sa.Column('dedicated', sa.Boolean(), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('first_seen_at', hotline.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('registered_domain')
    )
    op.create_table('known_hash',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('list_id', sa.BigInteger(), nullable=False),
    sa.Column('hash_type', sa.Enum('sha256', 'sha1', 'md5', 'phash', 'pdq', 'photodna', name='hashtype', native_enum=False, length=20), nullable=False),
    sa.Column('value', sa.String(length=512), nullable=False),
    sa.Column('category', sa.String(length=64), nullable=True),
    sa.Column('added_at', hotline.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['list_id'], ['hash_list.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('hash_type', 'value', 'list_id', name='uq_known_hash_type_value_list')
    )
    op.create_table('sighting',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('target_id', sa.BigInteger(), nullable=False),
    sa.Column('media_id', sa.BigInteger(), nullable=False),
    sa.Column('media_url', sa.Text(), nullable=False),
    sa.Column('hosting_ip', sa.String(length=45), nullable=True),
    sa.Column('hosting_country', sa.String(length=2), nullable=True),
    sa.Column('hosting_asn', sa.BigInteger(), nullable=True),
    sa.Column('online', sa.Boolean(), nullable=False),
    sa.Column('first_seen_at', hotline.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', hotline.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['media_id'], ['media.id'], ),
    sa.ForeignKeyConstraint(['target_id'], ['target.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('target_id', 'media_id', name='uq_sighting_target_media')
    )
    with op.batch_alter_table('sighting', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sighting_media_id'), ['media_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sighting_target_id'), ['target_id'], unique=False)

    op.create_table('media_match',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('media_id', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.Enum('exact', 'near', name='matchkind', native_enum=False, length=20), nullable=False),
    sa.Column('hash_type', sa.Enum('sha256', 'sha1', 'md5', 'phash', 'pdq', 'photodna', name='hashtype', native_enum=False, length=20), nullable=False),
    sa.Column('distance', sa.Integer(), nullable=False),
    sa.Column('list_id', sa.BigInteger(), nullable=True),
    sa.Column('known_hash_id', sa.BigInteger(), nullable=True),
    sa.Column('matched_media_id', sa.BigInteger(), nullable=True),
    sa.Column('ref', sa.String(length=24), nullable=False),
    sa.Column('found_at', hotline.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['known_hash_id'], ['known_hash.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['list_id'], ['hash_list.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['matched_media_id'], ['media.id'], ),
    sa.ForeignKeyConstraint(['media_id'], ['media.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('media_id', 'hash_type', 'ref', name='uq_media_match')
    )
    with op.batch_alter_table('media_match', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_media_match_media_id'), ['media_id'], unique=False)

    with op.batch_alter_table('target', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('priority_reasons', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('hosting_ip', sa.String(length=45), nullable=True))
        batch_op.add_column(sa.Column('hosting_country', sa.String(length=2), nullable=True))
        batch_op.add_column(sa.Column('hosting_asn', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('hosting_org', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('processed_at', hotline.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_target_hosting_country'), ['hosting_country'], unique=False)
        batch_op.create_index('ix_target_queue', ['status', 'priority', 'first_reported_at'], unique=False)


    # The hotline's own list: media its analysts confirm join it.
    hash_list = sa.table(
        "hash_list",
        sa.column("name", sa.String),
        sa.column("description", sa.Text),
        sa.column("enabled", sa.Boolean),
        sa.column("own", sa.Boolean),
        sa.column("created_at", hotline.db.UTCDateTime),
    )
    op.bulk_insert(hash_list, [{
        "name": "hotline",
        "description": "Media confirmed by this hotline's analysts.",
        "enabled": True,
        "own": True,
        "created_at": hotline.db.utcnow(),
    }])

def downgrade() -> None:
    with op.batch_alter_table('target', schema=None) as batch_op:
        batch_op.drop_index('ix_target_queue')
        batch_op.drop_index(batch_op.f('ix_target_hosting_country'))
        batch_op.drop_column('processed_at')
        batch_op.drop_column('hosting_org')
        batch_op.drop_column('hosting_asn')
        batch_op.drop_column('hosting_country')
        batch_op.drop_column('hosting_ip')
        batch_op.drop_column('priority_reasons')
        batch_op.drop_column('attempts')

    with op.batch_alter_table('media_match', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_media_match_media_id'))

    op.drop_table('media_match')
    with op.batch_alter_table('sighting', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sighting_target_id'))
        batch_op.drop_index(batch_op.f('ix_sighting_media_id'))

    op.drop_table('sighting')
    op.drop_table('known_hash')
    op.drop_table('site')
    with op.batch_alter_table('media', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_media_sha1'))
        batch_op.drop_index(batch_op.f('ix_media_md5'))

    op.drop_table('media')
    op.drop_table('hash_list')
