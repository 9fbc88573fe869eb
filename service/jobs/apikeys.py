"""API keys in Redis: create, list, revoke (blocking, for `agss-vos keys` and start-up), verify (async,
for the servers). Only a SHA-256 digest of each key's secret is stored, never the key.

A key reads `agss_<id>_<secret>`: the id finds the record, the secret's digest is compared with the
stored one in constant time. Every job and session belongs to the id of the key that made it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import KeyExistsError, UnauthenticatedError
from .keys import Keys
from .records import text

PREFIX = "agss_"


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    max_running: int = 0  # 0: no limit
    max_queued: int = 0
    rate: float = 0.0  # submissions per second (a burst of max(1, rate) is allowed)
    created_at: float = 0.0

    def record(self, digest: str) -> dict[str, str]:
        return {"name": self.name, "digest": digest, "max_running": str(self.max_running),
                "max_queued": str(self.max_queued), "rate": str(self.rate), "created_at": str(self.created_at)}

    @classmethod
    def from_record(cls, key_id: str, h: dict) -> KeyInfo:
        d = {text(k): text(v) for k, v in h.items()}
        return cls(key_id, d["name"], int(d.get("max_running", 0)), int(d.get("max_queued", 0)),
                   float(d.get("rate", 0)), float(d.get("created_at", 0)))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(key: str) -> tuple[str, str] | None:
    if not key.startswith(PREFIX):
        return None
    key_id, _, secret = key[len(PREFIX):].partition("_")
    return (key_id, secret) if key_id.isalnum() and secret else None


def create(r, keys: Keys, name: str, max_running: int = 0, max_queued: int = 0, rate: float = 0.0,
           key: str | None = None) -> str:
    """A new key (or `key` itself, from a secrets file); it is returned once and never stored."""
    if not name or len(name) > 100 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError("a key name is 1-100 letters, digits, '-', '_' or '.'")
    key = key or f"{PREFIX}{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    parts = _split(key)
    if parts is None:
        raise ValueError(f"a key reads {PREFIX}<id>_<secret>")
    key_id, secret = parts
    info = KeyInfo(key_id, name, max_running, max_queued, rate, time.time())
    if not r.hsetnx(keys.apikey_names, name, key_id):
        raise KeyExistsError(f"a key named {name!r} exists (revoke it first)")
    r.hset(keys.apikey(key_id), mapping=info.record(_digest(secret)))
    return key


def listing(r, keys: Keys) -> list[KeyInfo]:
    out = []
    for _, key_id in sorted(r.hgetall(keys.apikey_names).items()):
        h = r.hgetall(keys.apikey(text(key_id)))
        if h:
            out.append(KeyInfo.from_record(text(key_id), h))
    return out


def revoke(r, keys: Keys, name: str) -> bool:
    key_id = r.hget(keys.apikey_names, name)
    if key_id is None:
        return False
    r.delete(keys.apikey(text(key_id)))
    r.hdel(keys.apikey_names, name)
    return True


def register_settings_file(settings) -> int:
    """At start-up: the keys of AGSS_API_KEYS_FILE (a secret), if set."""
    if not settings.api_keys_file:
        return 0
    import redis

    with redis.from_url(settings.redis_url, socket_connect_timeout=5) as r:
        return register_file(r, Keys(settings.key_prefix), Path(settings.api_keys_file))


def register_file(r, keys: Keys, path: Path) -> int:
    """Keys from a secrets file (`name key` per line, # comments): registered if new, kept otherwise.
    -> how many the file holds."""
    n = 0
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, key = line.partition(" ")
        key = key.strip()
        parts = _split(key)
        if parts is None:
            raise ValueError(f"{path}: line for {name!r} is not `name {PREFIX}<id>_<secret>`")
        stored = r.hget(keys.apikey(parts[0]), "digest")
        if stored is None:
            revoke(r, keys, name)  # the name may point at an older key of the file
            create(r, keys, name, key=key)
        n += 1
    return n


async def verify(r, keys: Keys, key: str | None) -> KeyInfo:
    """The key's record; UnauthenticatedError for no key, an unknown one or a revoked one."""
    parts = _split(key or "")
    if parts is None:
        raise UnauthenticatedError("an API key is required (Authorization: Bearer agss_...)" if not key
                                   else "not a valid API key")
    h = await r.hgetall(keys.apikey(parts[0]))
    stored = text(h.get(b"digest", b"")) if h else ""
    if not hmac.compare_digest(stored.encode(), _digest(parts[1]).encode()) or not h:
        raise UnauthenticatedError("unknown or revoked API key")
    return KeyInfo.from_record(parts[0], h)


def bearer(header: str | None) -> str | None:
    """The key of an `Authorization: Bearer KEY` header (or a bare key)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else header.strip()


async def authenticate(auth: str, r, keys: Keys, header: str | None) -> KeyInfo | None:
    """The caller's key from an Authorization value (UnauthenticatedError without a valid one), or None
    when authentication is off (AGSS_AUTH)."""
    if auth == "off":
        return None
    return await verify(r, keys, bearer(header))
