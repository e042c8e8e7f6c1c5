"""``deepfake-token create NAME | revoke NAME | list``: API tokens, stored hashed in Redis.

The token is printed once at creation; only its sha256 is kept.
"""

from __future__ import annotations

import argparse
import sys

import redis

from worker import keys
from worker.settings import ServiceSettings

from .store import new_token


def create(r: redis.Redis, name: str) -> str:
    old = r.get(keys.token_name_key(name))
    token = new_token()
    h = keys.hash_token(token)
    p = r.pipeline()
    if old:
        p.hdel(keys.TOKENS, old)  # re-creating a name replaces its token
    p.hset(keys.TOKENS, h, name)
    p.set(keys.token_name_key(name), h)
    p.execute()
    return token


def revoke(r: redis.Redis, name: str) -> bool:
    h = r.get(keys.token_name_key(name))
    if not h:
        return False
    r.hdel(keys.TOKENS, h)
    r.delete(keys.token_name_key(name))
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="deepfake-token", description="Manage API tokens.")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("create").add_argument("name")
    sub.add_parser("revoke").add_argument("name")
    sub.add_parser("list")
    a = p.parse_args(argv)
    url = ServiceSettings().tool_redis_url()
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        if a.cmd == "create":
            print(create(r, a.name))
        elif a.cmd == "revoke":
            if not revoke(r, a.name):
                print(f"no token named {a.name!r}", file=sys.stderr)
                return 1
            print(f"revoked {a.name}")
        else:
            for name in sorted(set(r.hvals(keys.TOKENS))):
                print(name)
    except redis.ConnectionError as e:
        print(f"deepfake-token: Redis is unreachable at {url}: {e}. Is deepfake-serve running? "
              "Otherwise set REDIS_URL to the service's Redis.", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
