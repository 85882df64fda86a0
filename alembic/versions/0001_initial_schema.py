"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Every table of SPEC §2. `price_ticks` is range-partitioned by day on `at`: a default partition
catches everything, and `ftl_ensure_price_ticks_partition(day)` adds the daily partitions ahead of
time (the flusher calls it for today and tomorrow).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# NOTE: a daily partition cannot be attached while the default partition holds rows of that day,
# so partitions (UTC days) are created ahead of time; rows that arrived earlier stay valid in the
# default partition.
ENSURE_PARTITION_FUNCTION = """
CREATE FUNCTION ftl_ensure_price_ticks_partition(day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('price_ticks_%s', to_char(day, 'YYYYMMDD'));
BEGIN
    IF to_regclass(part) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF price_ticks FOR VALUES FROM (%L) TO (%L)',
            part, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC'
        );
    END IF;
END;
$$
"""


def upgrade() -> None:
    op.create_table(
        "admin_settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_admin_settings")),
    )
    op.create_table(
        "districts",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.CheckConstraint("id BETWEEN 1 AND 14", name=op.f("ck_districts_id_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_districts")),
        sa.UniqueConstraint("name", name=op.f("uq_districts_name")),
    )
    op.create_table(
        "feature_flags",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("is_public", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_feature_flags")),
    )
    op.create_table(
        "fixtures",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("sportmonks_fixture_id", sa.BigInteger(), nullable=False),
        sa.Column("home_team", sa.String(length=3), nullable=False),
        sa.Column("away_team", sa.String(length=3), nullable=False),
        sa.Column("stage", sa.String(length=40), server_default="Group stage", nullable=False),
        sa.Column("kickoff_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "status",
            sa.Enum("scheduled", "live", "finished", name="fixture_status"),
            server_default="scheduled",
            nullable=False,
        ),
        sa.Column("minute", sa.SmallInteger(), nullable=True),
        sa.Column("home_score", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("away_score", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("full_time_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("home_team <> away_team", name=op.f("ck_fixtures_two_teams")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fixtures")),
        sa.UniqueConstraint(
            "sportmonks_fixture_id", name=op.f("uq_fixtures_sportmonks_fixture_id")
        ),
    )
    op.create_index(
        "ix_fixtures_status_kickoff", "fixtures", ["status", "kickoff_at"], unique=False
    )
    op.create_table(
        "instruments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("sportmonks_player_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("team", sa.String(length=3), nullable=False),
        sa.Column(
            "position",
            sa.Enum("GK", "DEF", "MID", "FWD", name="player_position"),
            nullable=False,
        ),
        sa.Column(
            "form_index",
            sa.Numeric(precision=8, scale=2),
            server_default="0",
            nullable=False,
        ),
        sa.Column("base_price", sa.Numeric(precision=18, scale=2), nullable=False),
        sa.Column("live_base_price", sa.Numeric(precision=18, scale=2), nullable=False),
        sa.Column(
            "k_mod",
            sa.Numeric(precision=12, scale=6),
            server_default="0.05",
            nullable=False,
        ),
        sa.Column(
            "net_lots",
            sa.Numeric(precision=12, scale=2),
            server_default="0",
            nullable=False,
        ),
        sa.Column("seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("frozen", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("degraded", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "base_price >= 1 AND live_base_price >= 1",
            name=op.f("ck_instruments_prices_floor"),
        ),
        sa.CheckConstraint("idx BETWEEN 1 AND 65535", name=op.f("ck_instruments_idx_uint16")),
        sa.CheckConstraint("k_mod >= 0", name=op.f("ck_instruments_k_mod_non_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instruments")),
        sa.UniqueConstraint("idx", name=op.f("uq_instruments_idx")),
        sa.UniqueConstraint(
            "sportmonks_player_id", name=op.f("uq_instruments_sportmonks_player_id")
        ),
    )
    op.create_index(op.f("ix_instruments_team"), "instruments", ["team"], unique=False)
    op.create_table(
        "price_ticks",
        sa.Column("instrument_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("price", sa.Numeric(precision=18, scale=2), nullable=False),
        sa.Column("live_base_price", sa.Numeric(precision=18, scale=2), nullable=False),
        sa.Column("net_lots", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("source", sa.SmallInteger(), nullable=False),
        sa.CheckConstraint("source BETWEEN 0 AND 4", name=op.f("ck_price_ticks_source_range")),
        sa.PrimaryKeyConstraint("instrument_id", "seq", "at", name=op.f("pk_price_ticks")),
        postgresql_partition_by="RANGE (at)",
    )
    op.create_table(
        "player_match_stats",
        sa.Column("fixture_id", sa.Uuid(), nullable=False),
        sa.Column("instrument_id", sa.Uuid(), nullable=False),
        sa.Column(
            "stats",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column(
            "match_score",
            sa.Numeric(precision=10, scale=2),
            server_default="0",
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["fixture_id"],
            ["fixtures.id"],
            name=op.f("fk_player_match_stats_fixture_id_fixtures"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instruments.id"],
            name=op.f("fk_player_match_stats_instrument_id_instruments"),
        ),
        sa.PrimaryKeyConstraint("fixture_id", "instrument_id", name=op.f("pk_player_match_stats")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("google_sub", sa.String(length=255), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("first_name", sa.String(length=50), nullable=False),
        sa.Column("last_name", sa.String(length=50), nullable=True),
        sa.Column("display_name", sa.String(length=101), nullable=False),
        sa.Column("age", sa.SmallInteger(), nullable=True),
        sa.Column("phone", sa.String(length=10), nullable=True),
        sa.Column("district_id", sa.SmallInteger(), nullable=False),
        sa.Column(
            "role",
            sa.Enum("user", "admin", name="user_role"),
            server_default="user",
            nullable=False,
        ),
        sa.Column("referral_code", sa.String(length=8), nullable=False),
        sa.Column(
            "is_synthetic",
            sa.Boolean(),
            server_default=sa.text("false"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "phone IS NULL OR phone ~ '^[6-9][0-9]{9}$'",
            name=op.f("ck_users_phone_format"),
        ),
        sa.CheckConstraint(
            "referral_code ~ '^[0-9a-f]{8}$'",
            name=op.f("ck_users_referral_code_format"),
        ),
        sa.CheckConstraint("age IS NULL OR age >= 18", name=op.f("ck_users_adult")),
        sa.ForeignKeyConstraint(
            ["district_id"],
            ["districts.id"],
            name=op.f("fk_users_district_id_districts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("google_sub", name=op.f("uq_users_google_sub")),
        sa.UniqueConstraint("phone", name=op.f("uq_users_phone")),
        sa.UniqueConstraint("referral_code", name=op.f("uq_users_referral_code")),
    )
    op.create_table(
        "cfd_positions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("instrument_id", sa.Uuid(), nullable=False),
        sa.Column("direction", sa.Enum("long", "short", name="direction"), nullable=False),
        sa.Column("lot_size", sa.Numeric(precision=7, scale=2), nullable=False),
        sa.Column("entry_price", sa.Numeric(precision=18, scale=2), nullable=False),
        sa.Column("margin", sa.Numeric(precision=18, scale=2), nullable=False),
        sa.Column("stop_loss", sa.Numeric(precision=18, scale=2), nullable=True),
        sa.Column("take_profit", sa.Numeric(precision=18, scale=2), nullable=True),
        sa.Column(
            "status",
            sa.Enum("open", "closed", name="position_status"),
            server_default="open",
            nullable=False,
        ),
        sa.Column("exit_price", sa.Numeric(precision=18, scale=2), nullable=True),
        sa.Column("realized_pnl", sa.Numeric(precision=18, scale=2), nullable=True),
        sa.Column(
            "closed_by",
            sa.Enum(
                "user",
                "stop_loss",
                "take_profit",
                "washout",
                "auto_exit_ft",
                name="close_reason",
            ),
            nullable=True,
        ),
        sa.Column("open_request_id", sa.String(length=64), nullable=False),
        sa.Column("close_request_id", sa.String(length=64), nullable=True),
        sa.Column("open_seq", sa.BigInteger(), nullable=False),
        sa.Column("close_seq", sa.BigInteger(), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(status = 'open' AND exit_price IS NULL AND realized_pnl IS NULL"
            " AND closed_by IS NULL AND closed_at IS NULL) OR (status = 'closed'"
            " AND exit_price IS NOT NULL AND realized_pnl IS NOT NULL"
            " AND closed_by IS NOT NULL AND closed_at IS NOT NULL)",
            name=op.f("ck_cfd_positions_open_or_closed"),
        ),
        sa.CheckConstraint(
            "entry_price >= 1 AND margin > 0",
            name=op.f("ck_cfd_positions_positive_money"),
        ),
        sa.CheckConstraint(
            "lot_size >= 0.01 AND lot_size <= 100",
            name=op.f("ck_cfd_positions_lot_size_range"),
        ),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instruments.id"],
            name=op.f("fk_cfd_positions_instrument_id_instruments"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_cfd_positions_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cfd_positions")),
        sa.UniqueConstraint(
            "user_id",
            "open_request_id",
            name=op.f("uq_cfd_positions_user_id_open_request_id"),
        ),
    )
    op.create_index(
        "ix_cfd_positions_instrument_open",
        "cfd_positions",
        ["instrument_id"],
        unique=False,
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_index(
        "ix_cfd_positions_user_open",
        "cfd_positions",
        ["user_id"],
        unique=False,
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_index(
        "ix_cfd_positions_user_opened_at",
        "cfd_positions",
        ["user_id", "opened_at"],
        unique=False,
    )
    op.create_table(
        "email_outbox",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("to_address", sa.String(length=320), nullable=False),
        sa.Column("template", sa.String(length=40), nullable=False),
        sa.Column(
            "context",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum("pending", "sent", "failed", name="email_status"),
            server_default="pending",
            nullable=False,
        ),
        sa.Column("attempts", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_email_outbox_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_outbox")),
    )
    op.create_index(
        "ix_email_outbox_pending",
        "email_outbox",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "leaderboard_snapshots",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "scope",
            sa.Enum("overall", "district", name="leaderboard_scope"),
            nullable=False,
        ),
        sa.Column("district_id", sa.SmallInteger(), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("score", sa.Numeric(precision=18, scale=2), nullable=False),
        sa.ForeignKeyConstraint(
            ["district_id"],
            ["districts.id"],
            name=op.f("fk_leaderboard_snapshots_district_id_districts"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_leaderboard_snapshots_user_id_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leaderboard_snapshots")),
    )
    op.create_index(
        "ix_leaderboard_snapshots_taken_scope",
        "leaderboard_snapshots",
        ["taken_at", "scope", "district_id", "rank"],
        unique=False,
    )
    op.create_table(
        "referral_invites",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("label", sa.String(length=80), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_referral_invites_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referral_invites")),
    )
    op.create_index(
        op.f("ix_referral_invites_user_id"),
        "referral_invites",
        ["user_id"],
        unique=False,
    )
    op.create_table(
        "wallets",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column(
            "balance",
            sa.Numeric(precision=18, scale=2),
            server_default="10000.00",
            nullable=False,
        ),
        sa.Column(
            "realized_pnl",
            sa.Numeric(precision=18, scale=2),
            server_default="0",
            nullable=False,
        ),
        sa.Column(
            "bonus_total",
            sa.Numeric(precision=18, scale=2),
            server_default="0",
            nullable=False,
        ),
        sa.Column("version", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_wallets_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_wallets")),
    )
    op.create_table(
        "margin_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("warning", "washout", name="margin_event_kind"),
            nullable=False,
        ),
        sa.Column("instrument_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("position_id", sa.Uuid(), nullable=True),
        sa.Column("price", sa.Numeric(precision=18, scale=2), nullable=False),
        sa.Column("equity", sa.Numeric(precision=18, scale=2), nullable=False),
        sa.Column("margin_level", sa.Numeric(precision=12, scale=2), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instruments.id"],
            name=op.f("fk_margin_events_instrument_id_instruments"),
        ),
        sa.ForeignKeyConstraint(
            ["position_id"],
            ["cfd_positions.id"],
            name=op.f("fk_margin_events_position_id_cfd_positions"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_margin_events_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_margin_events")),
    )
    op.create_index(op.f("ix_margin_events_user_id"), "margin_events", ["user_id"], unique=False)
    op.create_index(
        "uq_margin_events_cause",
        "margin_events",
        [
            "user_id",
            "kind",
            "instrument_id",
            "seq",
            sa.literal_column(
                "coalesce(position_id, '00000000-0000-0000-0000-000000000000'::uuid)"
            ),
        ],
        unique=True,
    )
    op.create_table(
        "referrals",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("referrer_id", sa.Uuid(), nullable=False),
        sa.Column("referred_id", sa.Uuid(), nullable=False),
        sa.Column("invite_id", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "bonus",
            sa.Numeric(precision=18, scale=2),
            server_default="0",
            nullable=False,
        ),
        sa.CheckConstraint("referrer_id <> referred_id", name=op.f("ck_referrals_not_self")),
        sa.ForeignKeyConstraint(
            ["invite_id"],
            ["referral_invites.id"],
            name=op.f("fk_referrals_invite_id_referral_invites"),
        ),
        sa.ForeignKeyConstraint(
            ["referred_id"], ["users.id"], name=op.f("fk_referrals_referred_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["referrer_id"], ["users.id"], name=op.f("fk_referrals_referrer_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referrals")),
        sa.UniqueConstraint("referred_id", name=op.f("uq_referrals_referred_id")),
    )
    op.create_index(op.f("ix_referrals_referrer_id"), "referrals", ["referrer_id"], unique=False)
    op.create_table(
        "wallet_ledger",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("entry_key", sa.String(length=120), nullable=False),
        sa.Column(
            "reason",
            sa.Enum(
                "position_closed",
                "referral_bonus",
                "referral_milestone",
                name="ledger_reason",
            ),
            nullable=False,
        ),
        sa.Column("amount", sa.Numeric(precision=18, scale=2), nullable=False),
        sa.Column("balance_after", sa.Numeric(precision=18, scale=2), nullable=False),
        sa.Column("position_id", sa.Uuid(), nullable=True),
        sa.Column("referral_id", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["position_id"],
            ["cfd_positions.id"],
            name=op.f("fk_wallet_ledger_position_id_cfd_positions"),
        ),
        sa.ForeignKeyConstraint(
            ["referral_id"],
            ["referrals.id"],
            name=op.f("fk_wallet_ledger_referral_id_referrals"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_wallet_ledger_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_ledger")),
        sa.UniqueConstraint("entry_key", name=op.f("uq_wallet_ledger_entry_key")),
    )
    op.create_index(op.f("ix_wallet_ledger_user_id"), "wallet_ledger", ["user_id"], unique=False)

    op.execute("CREATE TABLE price_ticks_default PARTITION OF price_ticks DEFAULT")
    op.execute(ENSURE_PARTITION_FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION ftl_ensure_price_ticks_partition(date)")
    op.drop_index(op.f("ix_wallet_ledger_user_id"), table_name="wallet_ledger")
    op.drop_table("wallet_ledger")
    op.drop_index(op.f("ix_referrals_referrer_id"), table_name="referrals")
    op.drop_table("referrals")
    op.drop_index("uq_margin_events_cause", table_name="margin_events")
    op.drop_index(op.f("ix_margin_events_user_id"), table_name="margin_events")
    op.drop_table("margin_events")
    op.drop_table("wallets")
    op.drop_index(op.f("ix_referral_invites_user_id"), table_name="referral_invites")
    op.drop_table("referral_invites")
    op.drop_index("ix_leaderboard_snapshots_taken_scope", table_name="leaderboard_snapshots")
    op.drop_table("leaderboard_snapshots")
    op.drop_index(
        "ix_email_outbox_pending",
        table_name="email_outbox",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_table("email_outbox")
    op.drop_index("ix_cfd_positions_user_opened_at", table_name="cfd_positions")
    op.drop_index(
        "ix_cfd_positions_user_open",
        table_name="cfd_positions",
        postgresql_where=sa.text("status = 'open'"),
    )
    op.drop_index(
        "ix_cfd_positions_instrument_open",
        table_name="cfd_positions",
        postgresql_where=sa.text("status = 'open'"),
    )
    op.drop_table("cfd_positions")
    op.drop_table("users")
    op.drop_table("player_match_stats")
    op.drop_table("price_ticks")
    op.drop_index(op.f("ix_instruments_team"), table_name="instruments")
    op.drop_table("instruments")
    op.drop_index("ix_fixtures_status_kickoff", table_name="fixtures")
    op.drop_table("fixtures")
    op.drop_table("feature_flags")
    op.drop_table("districts")
    op.drop_table("admin_settings")
    op.execute("DROP TYPE close_reason")
    op.execute("DROP TYPE direction")
    op.execute("DROP TYPE email_status")
    op.execute("DROP TYPE fixture_status")
    op.execute("DROP TYPE leaderboard_scope")
    op.execute("DROP TYPE ledger_reason")
    op.execute("DROP TYPE margin_event_kind")
    op.execute("DROP TYPE player_position")
    op.execute("DROP TYPE position_status")
    op.execute("DROP TYPE user_role")
