"""SQLAlchemy 2 models of every table of SPEC §2.

Money and prices are NUMERIC(18,2); lots NUMERIC(7,2) (0.01 to 100.00); ids are UUIDs except the
16-bit instrument `idx`. The schema itself is built by the Alembic migrations, never by create_all.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Money = Numeric(18, 2)
Lots = Numeric(7, 2)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UserRole(enum.Enum):
    user = "user"
    admin = "admin"


class PlayerPosition(enum.Enum):
    GK = "GK"
    DEF = "DEF"
    MID = "MID"
    FWD = "FWD"


class Direction(enum.Enum):
    long = "long"
    short = "short"


class PositionStatus(enum.Enum):
    open = "open"
    closed = "closed"


class CloseReason(enum.Enum):
    user = "user"
    stop_loss = "stop_loss"
    take_profit = "take_profit"
    washout = "washout"
    auto_exit_ft = "auto_exit_ft"


class FixtureStatus(enum.Enum):
    scheduled = "scheduled"
    live = "live"
    finished = "finished"


class MarginEventKind(enum.Enum):
    warning = "warning"
    washout = "washout"


class LedgerReason(enum.Enum):
    position_closed = "position_closed"
    referral_bonus = "referral_bonus"
    referral_milestone = "referral_milestone"


class EmailStatus(enum.Enum):
    pending = "pending"
    sent = "sent"
    failed = "failed"


class LeaderboardScope(enum.Enum):
    overall = "overall"
    district = "district"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(cls, name=name, values_callable=lambda members: [m.value for m in members])


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class District(Base):
    __tablename__ = "districts"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(40), nullable=False, unique=True)

    __table_args__ = (CheckConstraint("id BETWEEN 1 AND 14", name="id_range"),)


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    google_sub: Mapped[str | None] = mapped_column(String(255), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    first_name: Mapped[str] = mapped_column(String(50), nullable=False)
    last_name: Mapped[str | None] = mapped_column(String(50))
    display_name: Mapped[str] = mapped_column(String(101), nullable=False)
    age: Mapped[int | None] = mapped_column(SmallInteger)
    phone: Mapped[str | None] = mapped_column(String(10), unique=True)
    district_id: Mapped[int] = mapped_column(ForeignKey("districts.id"), nullable=False)
    role: Mapped[UserRole] = mapped_column(
        _enum(UserRole, "user_role"), nullable=False, server_default=UserRole.user.value
    )
    referral_code: Mapped[str] = mapped_column(String(8), nullable=False, unique=True)
    is_synthetic: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    created_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint("age IS NULL OR age >= 18", name="adult"),
        CheckConstraint("phone IS NULL OR phone ~ '^[6-9][0-9]{9}$'", name="phone_format"),
        CheckConstraint("referral_code ~ '^[0-9a-f]{8}$'", name="referral_code_format"),
    )


class Wallet(Base):
    """Hot copy lives in Redis; this row is what the flusher last persisted (`version` orders
    the writes so a late batch never overwrites a newer state)."""

    __tablename__ = "wallets"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    balance: Mapped[Decimal] = mapped_column(Money, nullable=False, server_default="10000.00")
    realized_pnl: Mapped[Decimal] = mapped_column(Money, nullable=False, server_default="0")
    bonus_total: Mapped[Decimal] = mapped_column(Money, nullable=False, server_default="0")
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    updated_at: Mapped[datetime] = _now()


class WalletLedger(Base):
    """Every balance change with its cause; `entry_key` makes each cause land exactly once."""

    __tablename__ = "wallet_ledger"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    entry_key: Mapped[str] = mapped_column(String(120), nullable=False, unique=True)
    reason: Mapped[LedgerReason] = mapped_column(
        _enum(LedgerReason, "ledger_reason"), nullable=False
    )
    amount: Mapped[Decimal] = mapped_column(Money, nullable=False)
    balance_after: Mapped[Decimal] = mapped_column(Money, nullable=False)
    position_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("cfd_positions.id"))
    referral_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("referrals.id"))
    created_at: Mapped[datetime] = _now()


class Fixture(Base):
    __tablename__ = "fixtures"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    sportmonks_fixture_id: Mapped[int] = mapped_column(BigInteger, nullable=False, unique=True)
    home_team: Mapped[str] = mapped_column(String(3), nullable=False)
    away_team: Mapped[str] = mapped_column(String(3), nullable=False)
    stage: Mapped[str] = mapped_column(String(40), nullable=False, server_default="Group stage")
    kickoff_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    status: Mapped[FixtureStatus] = mapped_column(
        _enum(FixtureStatus, "fixture_status"),
        nullable=False,
        server_default=FixtureStatus.scheduled.value,
    )
    minute: Mapped[int | None] = mapped_column(SmallInteger)
    home_score: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="0")
    away_score: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="0")
    full_time_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_out_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Round of 32 onwards: a level 5 FT is the brief FT before extra time (SPEC §5.2).
    knockout: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    feed_state_id: Mapped[int | None] = mapped_column(SmallInteger)  # Sportmonks state last seen
    feed_state_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("home_team <> away_team", name="two_teams"),
        Index("ix_fixtures_status_kickoff", "status", "kickoff_at"),
    )


class Instrument(Base):
    __tablename__ = "instruments"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    idx: Mapped[int] = mapped_column(Integer, nullable=False, unique=True)
    sportmonks_player_id: Mapped[int] = mapped_column(BigInteger, nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    team: Mapped[str] = mapped_column(String(3), nullable=False, index=True)
    position: Mapped[PlayerPosition] = mapped_column(
        _enum(PlayerPosition, "player_position"), nullable=False
    )
    form_index: Mapped[Decimal] = mapped_column(Numeric(8, 2), nullable=False, server_default="0")
    base_price: Mapped[Decimal] = mapped_column(Money, nullable=False)
    live_base_price: Mapped[Decimal] = mapped_column(Money, nullable=False)
    k_mod: Mapped[Decimal] = mapped_column(Numeric(12, 6), nullable=False, server_default="0.05")
    net_lots: Mapped[Decimal] = mapped_column(Numeric(12, 2), nullable=False, server_default="0")
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    frozen: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    degraded: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint("idx BETWEEN 1 AND 65535", name="idx_uint16"),
        CheckConstraint("base_price >= 1 AND live_base_price >= 1", name="prices_floor"),
        CheckConstraint("k_mod >= 0", name="k_mod_non_negative"),
    )


class PlayerMatchStats(Base):
    __tablename__ = "player_match_stats"

    fixture_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("fixtures.id", ondelete="CASCADE"), primary_key=True
    )
    instrument_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("instruments.id"), primary_key=True)
    stats: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    match_score: Mapped[Decimal] = mapped_column(Numeric(10, 2), nullable=False, server_default="0")
    updated_at: Mapped[datetime] = _now()


class CfdPosition(Base):
    __tablename__ = "cfd_positions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), nullable=False)
    instrument_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("instruments.id"), nullable=False)
    direction: Mapped[Direction] = mapped_column(_enum(Direction, "direction"), nullable=False)
    lot_size: Mapped[Decimal] = mapped_column(Lots, nullable=False)
    entry_price: Mapped[Decimal] = mapped_column(Money, nullable=False)
    margin: Mapped[Decimal] = mapped_column(Money, nullable=False)
    stop_loss: Mapped[Decimal | None] = mapped_column(Money)
    take_profit: Mapped[Decimal | None] = mapped_column(Money)
    status: Mapped[PositionStatus] = mapped_column(
        _enum(PositionStatus, "position_status"),
        nullable=False,
        server_default=PositionStatus.open.value,
    )
    exit_price: Mapped[Decimal | None] = mapped_column(Money)
    realized_pnl: Mapped[Decimal | None] = mapped_column(Money)
    closed_by: Mapped[CloseReason | None] = mapped_column(_enum(CloseReason, "close_reason"))
    open_request_id: Mapped[str] = mapped_column(String(64), nullable=False)
    close_request_id: Mapped[str | None] = mapped_column(String(64))
    open_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    close_seq: Mapped[int | None] = mapped_column(BigInteger)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("lot_size >= 0.01 AND lot_size <= 100", name="lot_size_range"),
        CheckConstraint("entry_price >= 1 AND margin > 0", name="positive_money"),
        CheckConstraint(
            "(status = 'open' AND exit_price IS NULL AND realized_pnl IS NULL AND closed_by IS NULL"
            " AND closed_at IS NULL) OR (status = 'closed' AND exit_price IS NOT NULL"
            " AND realized_pnl IS NOT NULL AND closed_by IS NOT NULL AND closed_at IS NOT NULL)",
            name="open_or_closed",
        ),
        UniqueConstraint("user_id", "open_request_id"),
        Index("ix_cfd_positions_user_open", "user_id", postgresql_where=text("status = 'open'")),
        Index(
            "ix_cfd_positions_instrument_open",
            "instrument_id",
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_cfd_positions_user_opened_at", "user_id", "opened_at"),
    )


class MarginEvent(Base):
    """A margin warning or washout, tied to the tick (instrument, seq) that caused it."""

    __tablename__ = "margin_events"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    kind: Mapped[MarginEventKind] = mapped_column(
        _enum(MarginEventKind, "margin_event_kind"), nullable=False
    )
    instrument_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("instruments.id"), nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    position_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("cfd_positions.id"))
    price: Mapped[Decimal] = mapped_column(Money, nullable=False)
    equity: Mapped[Decimal] = mapped_column(Money, nullable=False)
    margin_level: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    created_at: Mapped[datetime] = _now()

    __table_args__ = (
        # NOTE: a rerun of the replay re-derives the same events; this makes it write them once.
        Index(
            "uq_margin_events_cause",
            "user_id",
            "kind",
            "instrument_id",
            "seq",
            text("coalesce(position_id, '00000000-0000-0000-0000-000000000000'::uuid)"),
            unique=True,
        ),
    )


class PriceTick(Base):
    """Range-partitioned by day on `at`; see the migration for the partitions."""

    __tablename__ = "price_ticks"

    instrument_id: Mapped[uuid.UUID] = mapped_column(nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    price: Mapped[Decimal] = mapped_column(Money, nullable=False)
    live_base_price: Mapped[Decimal] = mapped_column(Money, nullable=False)
    net_lots: Mapped[Decimal] = mapped_column(Numeric(12, 2), nullable=False)
    source: Mapped[int] = mapped_column(SmallInteger, nullable=False)

    __table_args__ = (
        PrimaryKeyConstraint("instrument_id", "seq", "at"),
        CheckConstraint("source BETWEEN 0 AND 4", name="source_range"),
        {"postgresql_partition_by": "RANGE (at)"},
    )


class LeaderboardSnapshot(Base):
    __tablename__ = "leaderboard_snapshots"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    taken_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    scope: Mapped[LeaderboardScope] = mapped_column(
        _enum(LeaderboardScope, "leaderboard_scope"), nullable=False
    )
    district_id: Mapped[int | None] = mapped_column(ForeignKey("districts.id"))
    rank: Mapped[int] = mapped_column(Integer, nullable=False)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), nullable=False)
    score: Mapped[Decimal] = mapped_column(Money, nullable=False)

    __table_args__ = (
        Index("ix_leaderboard_snapshots_taken_scope", "taken_at", "scope", "district_id", "rank"),
    )


class Referral(Base):
    __tablename__ = "referrals"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    referrer_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id"), nullable=False, index=True
    )
    referred_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id"), nullable=False, unique=True
    )
    invite_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("referral_invites.id"))
    created_at: Mapped[datetime] = _now()
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    bonus: Mapped[Decimal] = mapped_column(Money, nullable=False, server_default="0")

    __table_args__ = (CheckConstraint("referrer_id <> referred_id", name="not_self"),)


class ReferralInvite(Base):
    __tablename__ = "referral_invites"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    label: Mapped[str] = mapped_column(String(80), nullable=False)
    created_at: Mapped[datetime] = _now()


class FeatureFlag(Base):
    __tablename__ = "feature_flags"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    is_public: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    updated_at: Mapped[datetime] = _now()


class AdminSetting(Base):
    __tablename__ = "admin_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONB, nullable=False)
    updated_at: Mapped[datetime] = _now()


class EmailOutbox(Base):
    __tablename__ = "email_outbox"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    to_address: Mapped[str] = mapped_column(String(320), nullable=False)
    template: Mapped[str] = mapped_column(String(40), nullable=False)
    context: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    status: Mapped[EmailStatus] = mapped_column(
        _enum(EmailStatus, "email_status"), nullable=False, server_default=EmailStatus.pending.value
    )
    attempts: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_email_outbox_pending", "created_at", postgresql_where=text("status = 'pending'")),
    )
