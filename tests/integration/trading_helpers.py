"""Users, wallets and instruments made directly in the stores, for the trading tests (the
Accounts issue owns registration; these rows are what it leaves behind)."""

from __future__ import annotations

import secrets
import uuid
from decimal import Decimal
from uuid import UUID

import psycopg

from ftl.market import instruments
from ftl.market.instruments import InstrumentState
from ftl.store.auth.tokens import TokenType
from ftl.store.services import Services


def make_user(pg: psycopg.Connection, *, district_id: int = 1, balance: str = "10000.00") -> UUID:
    pg.execute(
        "INSERT INTO districts (id, name) SELECT n, 'District ' || n FROM generate_series(1, 14) n"
        " ON CONFLICT DO NOTHING"
    )
    user_id = uuid.uuid4()
    name = f"Trader {user_id.hex[:6]}"
    pg.execute(
        "INSERT INTO users (id, first_name, display_name, district_id, referral_code)"
        " VALUES (%s, %s, %s, %s, %s)",
        (user_id, name, name, district_id, secrets.token_hex(4)),
    )
    pg.execute("INSERT INTO wallets (user_id, balance) VALUES (%s, %s)", (user_id, balance))
    return user_id


async def make_instrument(
    services: Services,
    pg: psycopg.Connection,
    *,
    live_base_cents: int = 10_000,
    k_mod: Decimal = Decimal("0.05"),
    active: bool = True,
    frozen: bool = False,
) -> UUID:
    """An instrument row in Postgres and its hot state in Redis."""
    row = pg.execute("SELECT coalesce(max(idx), 0) + 1 FROM instruments").fetchone()
    assert row is not None
    idx: int = row[0]
    instrument_id = uuid.uuid4()
    price = Decimal(live_base_cents) / 100
    pg.execute(
        "INSERT INTO instruments (id, idx, sportmonks_player_id, name, team, position,"
        " base_price, live_base_price, k_mod, is_active, frozen)"
        " VALUES (%s, %s, %s, %s, 'BRA', 'FWD', %s, %s, %s, %s, %s)",
        (instrument_id, idx, 900_000 + idx, f"Player {idx}", price, price, k_mod, active, frozen),
    )
    state = InstrumentState(
        id=instrument_id,
        idx=idx,
        sportmonks_player_id=900_000 + idx,
        name=f"Player {idx}",
        team="BRA",
        position="FWD",
        form_index=Decimal(0),
        base_price_cents=live_base_cents,
        live_base_price_cents=live_base_cents,
        k_mod_micros=int(k_mod * 1_000_000),
        net_lots_centis=0,
        seq=0,
        is_active=active,
        frozen=frozen,
        degraded=False,
    )
    await instruments.load_missing(services.redis, [state])
    return instrument_id


def access_token(services: Services, user_id: UUID) -> tuple[str, str]:
    """A signed access token for the user and its jti."""
    token, claims = services.tokens.issue(TokenType.ACCESS, str(user_id))
    return token, claims.jti
