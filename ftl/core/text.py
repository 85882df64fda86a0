"""Human text people choose (names, display names, invite labels): what is refused and how the
rest is stored (docs/decisions/0075-names-and-unicode.md).

Stored normalised: NFC, every run of whitespace (any Unicode space, tab, newline) one ASCII
space, no space at either end. Refused: control characters (NUL included; Postgres cannot store
it), lone surrogates, unassigned and private-use code points, format characters that reorder or
hide text (RTL override, zero-width space, BOM...), a combining mark with no letter to sit on,
and piles of more than MAX_MARKS_PER_LETTER combining marks (Zalgo text). ZWJ and ZWNJ stay
allowed between two letters: Malayalam and other Indic scripts need them.
"""

from __future__ import annotations

import unicodedata

from ftl.core.errors import InvalidInput

MAX_MARKS_PER_LETTER = 4
JOINERS = frozenset({"\u200c", "\u200d"})  # ZWNJ, ZWJ
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
MARK_CATEGORIES = frozenset({"Mn", "Mc", "Me"})


def _refusal(field: str, message: str) -> InvalidInput:
    return InvalidInput("validation_error", f"{field} {message}.", {"field": field})


def _is_letter_or_mark(char: str) -> bool:
    return unicodedata.category(char)[0] in "LM"


def human_text(raw: object, field: str, max_chars: int) -> str:
    """`raw` as stored text of 1 to `max_chars` characters (after normalising), or 400
    `validation_error` naming `field`."""
    if not isinstance(raw, str):
        raise _refusal(field, "must be text")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise _refusal(field, "must not contain lone surrogates") from None
    text = " ".join(unicodedata.normalize("NFC", raw).split())
    if not 1 <= len(text) <= max_chars:
        raise _refusal(field, f"must be 1 to {max_chars} characters")
    marks = 0
    for n, char in enumerate(text):
        category = unicodedata.category(char)
        if char in JOINERS:
            between_letters = 0 < n < len(text) - 1 and all(
                _is_letter_or_mark(c) for c in (text[n - 1], text[n + 1])
            )
            if not between_letters:
                raise _refusal(field, "may use a zero-width joiner only between letters")
            continue
        if category in REFUSED_CATEGORIES:
            raise _refusal(field, f"must not contain the character U+{ord(char):04X}")
        if category in MARK_CATEGORIES:
            marks += 1
            if n == 0 or text[n - 1] == " ":
                raise _refusal(field, "must not start a word with a combining mark")
            if marks > MAX_MARKS_PER_LETTER:
                raise _refusal(field, "has too many combining marks on one letter")
        else:
            marks = 0
    return text


MAX_PARAM_DIGITS = 9


def is_small_whole_number(raw: str) -> bool:
    """ASCII digits only, at most MAX_PARAM_DIGITS of them. NOTE: str.isdigit() alone lets
    through "²" and other digits int() refuses, and int() refuses over 4,300 digits."""
    return raw.isascii() and raw.isdigit() and len(raw) <= MAX_PARAM_DIGITS
