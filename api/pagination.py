"""Keyset pagination: an opaque ``next`` token holding the last row's key.

Stable under inserts: a page never repeats or skips a row that existed when the walk began,
because each page asks for keys strictly after the previous page's last key.
"""

from __future__ import annotations

import base64
import json
from typing import Any

MAX_LIMIT = 500  # the bound; larger pages are refused with 422
DEFAULT_LIMIT = 100


class BadToken(ValueError):
    """The ``next`` token is not one this API issued."""


def encode_token(key: list[Any]) -> str:
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, arity: int) -> list[Any]:
    """The key inside ``token``; raises :class:`BadToken` on anything malformed.

    >>> decode_token(encode_token([3, "0xab"]), 2)
    [3, '0xab']
    """
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        key = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadToken(str(e)) from None
    if not isinstance(key, list) or len(key) != arity:
        raise BadToken("wrong shape")
    if not all(isinstance(k, int | str) and not isinstance(k, bool) for k in key):
        raise BadToken("wrong types")
    return key
