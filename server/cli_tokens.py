"""``unmask token create|revoke|list``: API tokens for servers that listen beyond loopback."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import async_sessionmaker

from server.auth import TokenInfo, create_token, list_tokens, revoke_token
from server.settings import load_settings

T = TypeVar("T")


def _run(args: argparse.Namespace, work: Callable[[async_sessionmaker], Awaitable[T]]) -> T:
    """Migrate the configured database (tokens may be made before the first serve), then run ``work``."""
    from server.db.engine import create_engine, session_factory
    from server.db.migrate import upgrade

    overrides = {"data_dir": args.data_dir, "database_url": args.database_url}
    url = load_settings(config_file=args.config, overrides=overrides).resolved_database_url
    upgrade(url)

    async def main() -> T:
        engine = create_engine(url)
        try:
            return await work(session_factory(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _when(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def token_dict(info: TokenInfo) -> dict[str, Any]:
    """The JSON form of a token (never its secret)."""
    return {
        "name": info.name,
        "prefix": info.prefix,
        "status": "revoked" if info.revoked_at else "active",
        "created_at": _when(info.created_at),
        "last_used_at": _when(info.last_used_at),
        "revoked_at": _when(info.revoked_at),
        "rate_per_minute": info.rate_per_minute,
        "max_concurrent_checks": info.max_concurrent_checks,
    }


def cmd_create(args: argparse.Namespace) -> int:
    """Create a token and print its secret, once."""
    secret, info = _run(
        args,
        lambda s: create_token(
            s, args.name, rate_per_minute=args.rate, max_concurrent_checks=args.max_concurrent
        ),
    )
    if args.json:
        print(json.dumps({**token_dict(info), "secret": secret}))
    else:
        print(f"created token {info.name!r} ({info.prefix}…); the secret is shown only now:")
        print(secret)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    """Revoke a token by name or display prefix."""
    info = _run(args, lambda s: revoke_token(s, args.name))
    if args.json:
        print(json.dumps(token_dict(info)))
    else:
        print(f"revoked token {info.name!r} ({info.prefix}…); servers refuse it within seconds")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """List tokens (never secrets)."""
    tokens = _run(args, lambda s: list_tokens(s, include_revoked=args.all))
    rows = [token_dict(t) for t in tokens]
    if args.json:
        print(json.dumps(rows))
        return 0
    header = (
        "name",
        "prefix",
        "status",
        "created_at",
        "last_used_at",
        "rate_per_minute",
        "max_concurrent_checks",
    )
    table = [header] + [tuple("-" if r[k] is None else str(r[k]) for k in header) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _database_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML settings file (also UNMASK_CONFIG)")
    p.add_argument("--data-dir", type=Path, help="where the SQLite database lives")
    p.add_argument("--database-url", help="SQLAlchemy URL (sqlite+aiosqlite:///… or postgresql+asyncpg://…)")
    p.add_argument("--json", action="store_true", help="print JSON")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``token`` subcommands."""
    token = sub.add_parser("token", help="API tokens: create, revoke, list")
    tsub = token.add_subparsers(dest="token_command", required=True)
    p = tsub.add_parser("create", help="create a token and print its secret (shown once)")
    p.add_argument("name", help="who or what uses it, e.g. 'laptop-extension'")
    p.add_argument("--rate", type=int, help="requests per minute (default: the server's rate_per_minute)")
    p.add_argument(
        "--max-concurrent",
        type=int,
        help="checks running at once (default: the server's max_concurrent_checks_per_token)",
    )
    _database_args(p)
    p.set_defaults(func=cmd_create)
    p = tsub.add_parser("revoke", help="revoke a token by name or display prefix")
    p.add_argument("name", help="the token's name or its display prefix (unm_…)")
    _database_args(p)
    p.set_defaults(func=cmd_revoke)
    p = tsub.add_parser("list", help="list tokens (secrets are never stored, so never shown)")
    p.add_argument("--all", action="store_true", help="include revoked tokens")
    _database_args(p)
    p.set_defaults(func=cmd_list)
