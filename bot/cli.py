"""`crm-bot` (also `python -m bot`): every command, with one-line errors and exit code 2."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from bot.lib.config import ConfigError, load_settings
from storage.crypto import CryptoError, generate_key_line
from storage.db import DatabaseError

EXIT_USAGE = 2


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + error
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="crm-bot", description="Slack bot for cross-department customer work.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("serve", help="run the bot (HTTP on PORT, or Socket Mode)")
    s.add_argument("--port", type=int, help="HTTP port (default: PORT or 3000)")

    d = sub.add_parser("demo", help="run the bot with a local Slack sandbox and sample data")
    d.add_argument("--port", type=int, default=8080, help="port of the sandbox page")
    d.add_argument("--data", type=Path, help="folder for the demo database (default: temporary)")
    d.add_argument("--no-events", action="store_true", help="do not play sample sync events")
    d.add_argument("--customers", type=int, default=50, help="how many customers to seed")

    sub.add_parser("migrate", help="bring the database schema up to date")

    dr = sub.add_parser(
        "doctor", help="check the deployment: Slack token, scopes, channels, people, database"
    )
    dr.add_argument(
        "--manifest", type=Path, default=None, help="app manifest (default: manifest.yml)"
    )

    i = sub.add_parser("import", help="load customers from a CSV or JSON Lines file")
    i.add_argument("file", type=Path)

    k = sub.add_parser("keys", help="master keys")
    ksub = k.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    g = ksub.add_parser("generate", help="print a new key line for CRM_MASTER_KEYS")
    g.add_argument("--id", default=None, help="key id (default: k<date>)")
    r = ksub.add_parser("rotate", help="re-wrap every data key under the active master key")
    r.add_argument("--reindex", action="store_true", help="also rebuild the blind indexes")
    r.add_argument("--batch", type=int, default=500)

    a = sub.add_parser("audit", help="the audit log")
    asub = a.add_subparsers(dest="audit_command", required=True, parser_class=_Parser)
    v = asub.add_parser("verify", help="check the hash chain")
    v.add_argument(
        "--head",
        type=_audit_head,
        default=None,
        help="SEQ:HASH noted earlier (printed by verify, logged by the bot): must still be there",
    )
    e = asub.add_parser("export", help="write entries as JSON lines")
    e.add_argument("--since", type=_iso_time, default=None, help="ISO date or time (UTC)")

    q = sub.add_parser("dlq", help="dead-lettered sync events")
    qsub = q.add_subparsers(dest="dlq_command", required=True, parser_class=_Parser)
    ql = qsub.add_parser("list", help="show dead letters with their reasons")
    ql.add_argument("--limit", type=int, default=100)
    qr = qsub.add_parser("replay", help="re-drive dead letters into the sync queue")
    qr.add_argument("--id", action="append", dest="ids", help="event id (repeatable; default all)")

    al = sub.add_parser("alerts", help="sync alerts Slack refused for good")
    alsub = al.add_subparsers(dest="alerts_command", required=True, parser_class=_Parser)
    af = alsub.add_parser("failed", help="show alerts Slack refused, with the reason")
    af.add_argument("--limit", type=int, default=100)
    ar = alsub.add_parser(
        "retry", help="make failed alerts pending again: the running bot posts them"
    )
    ar.add_argument("--channel", action="append", dest="channels", help="channel id (repeatable)")
    ar.add_argument("--id", action="append", dest="ids", help="event id (repeatable)")
    return p


def _audit_head(text: str) -> tuple[int, str]:
    from storage.audit import parse_head

    try:
        return parse_head(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _iso_time(text: str) -> datetime:
    from datetime import UTC

    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("alembic", "aiormq", "aio_pika", "slack_bolt.AsyncApp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args = build_parser().parse_args(argv)
        return asyncio.run(run(args)) or 0
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, CryptoError, DatabaseError) as exc:
        print(f"crm-bot: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


async def run(args: argparse.Namespace) -> int:
    if args.command == "keys" and args.keys_command == "generate":
        key_id = args.id or datetime.now().strftime("k%Y%m%d")
        print(generate_key_line(key_id))
        return 0
    settings = load_settings()
    if args.command == "serve":
        from bot.serve import serve

        return await serve(settings, port=args.port)
    if args.command == "demo":
        from bot.demo import run_demo

        return await run_demo(settings, args)
    if args.command == "dlq":
        return await _dlq(settings, args)
    if args.command == "doctor":
        from bot.doctor import run_doctor
        from bot.lib.config import load_config

        return await run_doctor(settings, load_config(settings.crm_config), args.manifest)
    from bot.runtime import open_storage

    db, vault = await open_storage(settings, migrate=args.command == "migrate")
    try:
        return await _storage_command(args, db, vault)
    finally:
        await db.close()


async def _storage_command(args, db, vault) -> int:
    from bot.progress import bar
    from storage import audit, rotation

    if args.command == "migrate":
        print("database is up to date")
    elif args.command == "import":
        from bot.importer import count_lines, import_file

        if not args.file.is_file():
            raise UsageError(f"crm-bot import: no such file: {args.file}")
        try:
            with bar(count_lines(args.file), "importing") as advance:
                report = await import_file(db, vault, args.file, progress=advance)
        except ValueError as exc:
            raise UsageError(f"crm-bot import: {exc}") from None
        for line, reason in report.rejected[:50]:
            print(f"line {line}: {reason}")
        if len(report.rejected) > 50:
            print(f"... and {len(report.rejected) - 50} more rejected lines")
        print(report.summary())
    elif args.command == "keys":
        with bar(await rotation.count_to_rewrap(db, vault), "re-wrapping") as advance:
            n = await rotation.rewrap(db, vault, batch=args.batch, progress=advance)
        print(f"re-wrapped {n} data keys under {vault.ring.active_id}")
        if args.reindex:
            with bar(await rotation.count_customers(db), "re-indexing") as advance:
                m = await rotation.reindex(db, vault, batch=args.batch, progress=advance)
            print(f"rebuilt the blind indexes of {m} customers")
    elif args.command == "audit" and args.audit_command == "verify":
        async with db.transaction() as session:
            verdict = await audit.verify(session, vault, noted=args.head)
        print(verdict)
        return 0 if verdict.ok else 1
    elif args.command == "audit":
        async with db.transaction() as session:
            async for entry in audit.export(session, args.since, vault):
                print(json.dumps(entry, sort_keys=True))
    elif args.command == "alerts":
        return await _alerts(args, db)
    return 0


async def _alerts(args, db) -> int:
    from storage import sync_ledger

    async with db.transaction() as session:
        if args.alerts_command == "failed":
            rows = await sync_ledger.failed(session, limit=args.limit)
            for at, event_id, channel, error in rows:
                print(f"{at:%Y-%m-%dT%H:%M:%SZ}\t{event_id}\t{channel}\t{error}")
            print(f"{len(rows)} failed alerts")
        else:
            n = await sync_ledger.retry_failed(
                session, channels=args.channels or (), event_ids=args.ids or ()
            )
            print(f"{n} failed alerts are pending again; the running bot posts them")
    return 0


async def _dlq(settings, args) -> int:
    if not settings.amqp_url:
        raise ConfigError("missing setting: AMQP_URL (dlq needs RabbitMQ)")
    from bot.broker import dlq_list, dlq_replay

    if args.dlq_command == "list":
        letters = await dlq_list(settings.amqp_url, limit=args.limit)
        for d in letters:
            print(f"{d.event_id}\t{d.routing_key}\tattempts={d.attempts}\t{d.reason}")
        print(f"{len(letters)} dead letters")
    else:
        n = await dlq_replay(settings.amqp_url, args.ids)
        print(f"replayed {n} dead letters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
