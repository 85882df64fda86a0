"""The scoring weights the operator can change: admin setting `scoring_weights` (SPEC §1.3)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ftl.market.scoring import DEFAULT_WEIGHTS, Weights
from ftl.store.db.models import AdminSetting

WEIGHTS_SETTING = "scoring_weights"


async def read_weights(engine: AsyncEngine) -> Weights:
    """The operator's table, or SPEC's defaults while none was saved."""
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                select(AdminSetting.value).where(AdminSetting.key == WEIGHTS_SETTING)
            )
        ).scalar_one_or_none()
    return DEFAULT_WEIGHTS if stored is None else Weights.from_json(stored)


async def write_weights(engine: AsyncEngine, value: Any) -> Weights:
    """Replace the table; validated first, so a bad body raises InvalidInput and changes nothing."""
    weights = Weights.from_json(value)
    stored = weights.to_json()
    statement = insert(AdminSetting).values(key=WEIGHTS_SETTING, value=stored)
    async with engine.begin() as conn:
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=[AdminSetting.key], set_={"value": stored, "updated_at": func.now()}
            )
        )
    return weights
