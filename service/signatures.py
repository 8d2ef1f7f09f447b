"""Nylas v3 webhook signatures: lowercase hex HMAC-SHA256 of the raw body, keyed by the destination's secret."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def is_valid(body: bytes, header: str | None, secrets: Iterable[str]) -> bool:
    """True when the header matches the body under any configured secret (more than one while rotating)."""
    if not header:
        return False
    # Bytes, not str: compare_digest refuses non-ASCII text, and a header is whatever the sender put there.
    given = header.strip().lower().removeprefix("sha256=").encode("utf-8", "replace")
    # Every secret is tried, match or not, so the time taken does not tell which one matched.
    matches = [hmac.compare_digest(sign(secret, body).encode(), given) for secret in secrets]
    return any(matches)
