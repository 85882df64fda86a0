"""Fixtures: the knockout flag and the Sportmonks state last seen (SPEC §5.2, issue 18).

`knockout` (round of 32 onwards) decides whether a 5 FT with a level score is the brief FT shown
before extra time; `feed_state_id` and `feed_state_since` hold the last state and since when, for
the 15-minute rule and for the close-out of an abandoned or cancelled match (no re-basing).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "fixtures",
        sa.Column("knockout", sa.Boolean(), nullable=False, server_default=sa.text("false")),
    )
    op.add_column("fixtures", sa.Column("feed_state_id", sa.SmallInteger(), nullable=True))
    op.add_column(
        "fixtures", sa.Column("feed_state_since", sa.DateTime(timezone=True), nullable=True)
    )
    # NOTE: the demo data names its knockout stages; every World Cup stage but the groups is one.
    op.execute("UPDATE fixtures SET knockout = true WHERE stage NOT ILIKE '%group%'")


def downgrade() -> None:
    op.drop_column("fixtures", "feed_state_since")
    op.drop_column("fixtures", "feed_state_id")
    op.drop_column("fixtures", "knockout")
