"""`agss-vos keys create | list | revoke`: API keys, stored hashed in the service's Redis.

The Redis is AGSS_REDIS_URL; without it, the embedded Redis of `agss-vos serve` in AGSS_DATA_DIR (the
running one, or started for the command and stopped after).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator

from ..errors import EXIT_OK
from .common import CLIError, settings_from


def register(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("keys", help="API keys: create, list, revoke")
    ksub = k.add_subparsers(dest="keys_command", metavar="WHAT", required=True)
    c = ksub.add_parser("create", help="create a key; it is printed once, alone on the last line")
    c.add_argument("--name", required=True, help="a name for the key (its tenant)")
    c.add_argument("--max-running", type=int, default=0, help="jobs and sessions running at once (0: no limit)")
    c.add_argument("--max-queued", type=int, default=0, help="jobs and sessions waiting (0: no limit)")
    c.add_argument("--rate", default="0", help="submissions per second, e.g. 2 or 2/s (0: no limit)")
    c.set_defaults(func=create)
    ls = ksub.add_parser("list", help="the keys (names, ids, quotas; never the keys themselves)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=listing)
    rv = ksub.add_parser("revoke", help="revoke a key by name: its calls get 401 from now on")
    rv.add_argument("name")
    rv.set_defaults(func=revoke)


@contextlib.contextmanager
def _redis(settings) -> Iterator:
    import redis

    from ..runtime.redis import EmbeddedRedis

    url = settings.redis_url
    embedded = None
    if not url:
        e = EmbeddedRedis(settings.data_dir / "redis")
        if e.url_file.is_file():
            url = e.url_file.read_text().strip()  # a running serve's
        else:
            embedded = e.start()
            url = embedded.url
    r = redis.from_url(url, socket_connect_timeout=5)
    try:
        r.ping()
    except redis.RedisError as e:
        raise CLIError(f"cannot reach Redis at {url}: {e}") from None
    try:
        yield r
    finally:
        r.close()
        if embedded:
            embedded.stop()


def _rate(text: str) -> float:
    try:
        value = float(text.removesuffix("/s"))
    except ValueError:
        raise CLIError(f"--rate {text!r}: expected a number of submissions per second, e.g. 2/s") from None
    if value < 0:
        raise CLIError("--rate must not be negative")
    return value


def create(args: argparse.Namespace) -> int:
    from ..jobs import apikeys
    from ..jobs.keys import Keys

    settings = settings_from(args)
    if args.max_running < 0 or args.max_queued < 0:
        raise CLIError("--max-running and --max-queued must not be negative")
    rate = _rate(args.rate)
    with _redis(settings) as r:
        try:
            key = apikeys.create(r, Keys(settings.key_prefix), args.name, args.max_running, args.max_queued, rate)
        except ValueError as e:
            raise CLIError(str(e)) from None
    print(f"created key {args.name!r} (max running {args.max_running or 'any'}, max queued "
          f"{args.max_queued or 'any'}, rate {rate or 'any'}/s); it is shown once:")
    print(key)
    return EXIT_OK


def listing(args: argparse.Namespace) -> int:
    from ..jobs import apikeys
    from ..jobs.keys import Keys

    settings = settings_from(args)
    with _redis(settings) as r:
        infos = apikeys.listing(r, Keys(settings.key_prefix))
    if args.json:
        print(json.dumps([i.__dict__ for i in infos], indent=2))
        return EXIT_OK
    print(f"{'name':<24} {'id':<14} {'max running':>11} {'max queued':>10} {'rate/s':>7}  created")
    for i in infos:
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(i.created_at))
        print(f"{i.name:<24} {i.id:<14} {i.max_running or '-':>11} {i.max_queued or '-':>10} {i.rate or '-':>7}  "
              f"{created}")
    return EXIT_OK


def revoke(args: argparse.Namespace) -> int:
    from ..jobs import apikeys
    from ..jobs.keys import Keys

    settings = settings_from(args)
    with _redis(settings) as r:
        if not apikeys.revoke(r, Keys(settings.key_prefix), args.name):
            raise CLIError(f"no key named {args.name!r}")
    print(f"revoked {args.name!r}")
    return EXIT_OK
