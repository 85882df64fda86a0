"""Sessions: an access + refresh token pair per sign-in, refresh rotation with reuse detection,
and revocation at logout.

Every refresh token belongs to a family (`fam` claim, one per sign-in). Redis holds the jti of the
family's one live refresh token (keys.refresh_family). Refreshing swaps it atomically
(lua/refresh_rotate.lua); presenting a token that was already swapped out means it was copied,
so the whole family ends and every refresh token of it is dead.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from msgspec import Meta

from ftl.accounts.users import Account, User, get_account
from ftl.core.answers import Answer
from ftl.core.errors import Unauthorized
from ftl.store import keys
from ftl.store.auth.tokens import TTL_S, Claims, TokenType
from ftl.store.services import Services

FAMILY_CLAIM = "fam"
ROLE_CLAIM = "role"
ROTATED, REUSED = 1, 0


class Session(Answer):
    """The login answer of SPEC §3.1."""

    user: User
    access_token: str
    refresh_token: str
    expires_in: Annotated[int, Meta(description="Seconds the access token lives.")]


@dataclass(frozen=True)
class SignIn:
    """One sign-in's token pair, for the answer and the session cookies."""

    account: Account
    access_token: str
    refresh_token: str
    access: Claims
    refresh: Claims

    @property
    def expires_in_s(self) -> int:
        return self.access.exp - self.access.iat

    def answer(self) -> Session:
        return Session(
            user=self.account.answer(),
            access_token=self.access_token,
            refresh_token=self.refresh_token,
            expires_in=self.expires_in_s,
        )


def issue_access(services: Services, account: Account, family: str | None = None) -> str:
    """An access token; `role` rides along so the coming-soon gate needs no database read."""
    extra: dict[str, str] = {ROLE_CLAIM: account.role.value}
    if family is not None:
        extra[FAMILY_CLAIM] = family
    token, _ = services.tokens.issue(TokenType.ACCESS, str(account.id), extra=extra)
    return token


def _pair(services: Services, account: Account, family: str) -> SignIn:
    access_token, access = services.tokens.issue(
        TokenType.ACCESS,
        str(account.id),
        extra={ROLE_CLAIM: account.role.value, FAMILY_CLAIM: family},
    )
    refresh_token, refresh = services.tokens.issue(
        TokenType.REFRESH, str(account.id), extra={FAMILY_CLAIM: family}
    )
    return SignIn(account, access_token, refresh_token, access, refresh)


async def start(services: Services, account: Account) -> SignIn:
    """Sign in: a new session family with its first token pair."""
    session = _pair(services, account, uuid.uuid4().hex)
    await services.redis.set(
        keys.refresh_family(session.refresh.extra[FAMILY_CLAIM]),
        session.refresh.jti,
        ex=TTL_S[TokenType.REFRESH],
    )
    return session


async def rotate(services: Services, refresh_token: str) -> SignIn:
    """A new pair for a live refresh token; the presented one dies. 401 otherwise, and a token
    already rotated away kills its whole family."""
    claims = services.tokens.verify(refresh_token, TokenType.REFRESH)
    family = claims.extra.get(FAMILY_CLAIM)
    if not isinstance(family, str):
        raise Unauthorized("unauthorized", "The refresh token is not valid.")
    account = await get_account(services.engine, claims.user_id)
    if account is None:
        raise Unauthorized("unauthorized", "The account no longer exists.")
    session = _pair(services, account, family)
    outcome = await services.scripts.call(
        "refresh_rotate",
        keys=[keys.refresh_family(family)],
        args=[claims.jti, session.refresh.jti, TTL_S[TokenType.REFRESH] * 1000],
    )
    if outcome == REUSED:
        # APPSEC: the same refresh token used twice means it leaked; end the session for both.
        raise Unauthorized("unauthorized", "The refresh token was already used; sign in again.")
    if outcome != ROTATED:
        raise Unauthorized("unauthorized", "The session has ended; sign in again.")
    return session


async def revoke(services: Services, claims: Iterable[Claims]) -> None:
    """Block each token's jti until its own expiry and end the session families they belong to.
    Idempotent: revoking twice changes nothing more."""
    now = int(time.time())
    async with services.redis.pipeline(transaction=False) as pipe:
        for claim in claims:
            if claim.exp > now:
                pipe.set(keys.revoked_jti(claim.jti), "1", ex=claim.exp - now)
            family = claim.extra.get(FAMILY_CLAIM)
            if isinstance(family, str):
                pipe.delete(keys.refresh_family(family))
        await pipe.execute()
