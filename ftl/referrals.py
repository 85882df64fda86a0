"""Referral codes: 8 lowercase hex characters, unique per user, stable for life (SPEC §1.9)."""

from __future__ import annotations

import secrets

REFERRAL_CODE_BYTES = 4


def new_referral_code() -> str:
    return secrets.token_hex(REFERRAL_CODE_BYTES)
