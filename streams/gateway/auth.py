"""Who may write: bearer API keys (only their SHA-256 digests are configured) and the beacon's public write keys.

A leaked configuration does not leak API keys (a digest cannot be sent as a key). Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac

from streams.gateway.errors import Refused


class ApiKeys:
    def __init__(self, digests: list[str]) -> None:
        self._digests = [bytes.fromhex(d.strip().lower()) for d in digests if d.strip()]
        if any(len(d) != 32 for d in self._digests):
            raise ValueError("gateway_api_key_hashes must be hex SHA-256 digests (64 hex digits each)")

    def check(self, authorization: str | None) -> None:
        """Raise Refused(401) unless the Authorization header is `Bearer <a configured key>`."""
        if not authorization:
            raise Refused(401, "missing_api_key", "send Authorization: Bearer <API key>",
                          {"WWW-Authenticate": 'Bearer realm="livepulse"'})
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Refused(401, "bad_api_key", "the Authorization header is not `Bearer <API key>`",
                          {"WWW-Authenticate": 'Bearer realm="livepulse"'})
        digest = hashlib.sha256(key.strip().encode("utf-8", "surrogateescape")).digest()
        found = False
        for known in self._digests:  # every digest compared: the time does not say which one matched
            found |= hmac.compare_digest(digest, known)
        if not found:
            raise Refused(401, "bad_api_key", "unknown API key", {"WWW-Authenticate": 'Bearer realm="livepulse"'})


def key_digest(key: str) -> str:
    """The value to put in LIVEPULSE_GATEWAY_API_KEY_HASHES for an API key."""
    return hashlib.sha256(key.encode()).hexdigest()


class WriteKeys:
    """The beacon's write keys: public (they are in the page), they admit a page of a known organiser."""

    def __init__(self, keys_by_organizer: dict[str, list[str]]) -> None:
        self._organizer = {key: organizer for organizer, keys in keys_by_organizer.items() for key in keys if key}

    def organizer(self, key: object) -> str:
        if not isinstance(key, str) or not key:
            raise Refused(401, "missing_write_key", "the beacon sends no write key")
        for known, organizer in self._organizer.items():
            if hmac.compare_digest(known.encode(), key.encode("utf-8", "surrogateescape")):
                return organizer
        raise Refused(401, "bad_write_key", "unknown write key")
