"""The constraints the rules imply hold in the database itself."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors

from ftl.store.db.engine import libpq_url

USER_SQL = (
    "INSERT INTO users"
    " (id, first_name, display_name, district_id, referral_code, google_sub, phone)"
    " VALUES (%s, 'Asha', 'Asha', 7, %s, %s, %s)"
)
INSTRUMENT_SQL = (
    "INSERT INTO instruments (id, idx, sportmonks_player_id, name, team, position, base_price,"
    " live_base_price) VALUES (%s, %s, %s, 'Player', 'ARG', 'FWD', 100, 100)"
)


@pytest.fixture
def db(schema: str, clean: None) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq_url(schema), autocommit=True) as conn:
        conn.execute("INSERT INTO districts (id, name) VALUES (7, 'Ernakulam')")
        yield conn


def add_user(
    db: psycopg.Connection, *, sub: str | None = None, phone: str | None = None
) -> uuid.UUID:
    user_id = uuid.uuid4()
    db.execute(USER_SQL, (user_id, uuid.uuid4().hex[:8], sub, phone))
    return user_id


def add_instrument(db: psycopg.Connection, idx: int = 1) -> uuid.UUID:
    instrument_id = uuid.uuid4()
    db.execute(INSTRUMENT_SQL, (instrument_id, idx, 1000 + idx))
    return instrument_id


def add_position(
    db: psycopg.Connection, user: uuid.UUID, instrument: uuid.UUID, **overrides: object
) -> None:
    row: dict[str, object] = {
        "id": uuid.uuid4(),
        "user_id": user,
        "instrument_id": instrument,
        "direction": "long",
        "lot_size": "1.00",
        "entry_price": "100.00",
        "margin": "1000.00",
        "open_request_id": uuid.uuid4().hex,
        "open_seq": 1,
        "opened_at": "2026-06-13T19:05:00Z",
    }
    row.update(overrides)
    columns = ", ".join(row)
    placeholders = ", ".join(["%s"] * len(row))
    db.execute(f"INSERT INTO cfd_positions ({columns}) VALUES ({placeholders})", list(row.values()))


def test_google_subject_is_unique(db: psycopg.Connection) -> None:
    add_user(db, sub="google-1")
    with pytest.raises(errors.UniqueViolation):
        add_user(db, sub="google-1")


def test_phone_is_unique_and_indian_mobile_shaped(db: psycopg.Connection) -> None:
    add_user(db, phone="9876543210")
    with pytest.raises(errors.UniqueViolation):
        add_user(db, phone="9876543210")
    with pytest.raises(errors.CheckViolation):
        add_user(db, phone="5876543210")


def test_users_are_adults(db: psycopg.Connection) -> None:
    user = add_user(db)
    with pytest.raises(errors.CheckViolation):
        db.execute("UPDATE users SET age = 17 WHERE id = %s", (user,))


@pytest.mark.parametrize("lots", ["0.00", "-1.00", "100.01"])
def test_lot_size_stays_within_0_01_and_100(db: psycopg.Connection, lots: str) -> None:
    user, instrument = add_user(db), add_instrument(db)
    with pytest.raises(errors.CheckViolation):
        add_position(db, user, instrument, lot_size=lots)


def test_direction_and_close_reason_are_enums(db: psycopg.Connection) -> None:
    user, instrument = add_user(db), add_instrument(db)
    with pytest.raises(errors.InvalidTextRepresentation):
        add_position(db, user, instrument, direction="sideways")
    with pytest.raises(errors.InvalidTextRepresentation):
        add_position(
            db,
            user,
            instrument,
            status="closed",
            exit_price="1",
            realized_pnl="0",
            closed_by="boredom",
            closed_at="2026-06-13T20:00:00Z",
        )


def test_a_position_is_either_open_or_fully_closed(db: psycopg.Connection) -> None:
    user, instrument = add_user(db), add_instrument(db)
    with pytest.raises(errors.CheckViolation):
        add_position(db, user, instrument, status="closed")
    with pytest.raises(errors.CheckViolation):
        add_position(db, user, instrument, exit_price="101.00")
    add_position(
        db,
        user,
        instrument,
        status="closed",
        exit_price="101.00",
        realized_pnl="100.00",
        closed_by="washout",
        closed_at="2026-06-13T20:00:00Z",
    )


def test_instrument_idx_is_a_unique_uint16(db: psycopg.Connection) -> None:
    add_instrument(db, idx=1)
    with pytest.raises(errors.UniqueViolation):
        db.execute(INSTRUMENT_SQL, (uuid.uuid4(), 1, 99_999))
    with pytest.raises(errors.CheckViolation):
        add_instrument(db, idx=65_536)


def test_open_position_indexes_exist(db: psycopg.Connection) -> None:
    indexes = {
        row[0]: row[1]
        for row in db.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'cfd_positions'"
        )
    }
    assert "WHERE (status = 'open'" in indexes["ix_cfd_positions_user_open"]
    assert "(user_id)" in indexes["ix_cfd_positions_user_open"]
    assert "(instrument_id)" in indexes["ix_cfd_positions_instrument_open"]


def test_price_ticks_land_in_daily_partitions_or_the_default(db: psycopg.Connection) -> None:
    instrument = add_instrument(db)
    db.execute("SELECT ftl_ensure_price_ticks_partition('2026-06-13')")
    db.execute("SELECT ftl_ensure_price_ticks_partition('2026-06-13')")  # idempotent
    insert = (
        "INSERT INTO price_ticks (instrument_id, seq, at, price, live_base_price, net_lots, source)"
        " VALUES (%s, %s, %s, 100, 100, 0, 0)"
    )
    db.execute(insert, (instrument, 1, "2026-06-13T23:59:59Z"))
    db.execute(insert, (instrument, 2, "2026-06-14T00:00:00Z"))
    placed: dict[int, str] = dict(
        db.execute("SELECT seq, tableoid::regclass::text FROM price_ticks ORDER BY seq").fetchall()
    )
    assert placed == {1: "price_ticks_20260613", 2: "price_ticks_default"}
    with pytest.raises(errors.UniqueViolation):
        db.execute(insert, (instrument, 1, "2026-06-13T23:59:59Z"))
    with pytest.raises(errors.CheckViolation):
        db.execute(insert.replace(", 0)", ", 5)"), (instrument, 3, "2026-06-13T12:00:00Z"))
