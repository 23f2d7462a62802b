"""`fivestep serve | migrate | cleanup-uploads | create-user | reset-password | device ...`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import sys
from typing import Any

import msgspec

from schemas.auth import NewPassword, UserCreate
from schemas.config import Settings
from server.config import ConfigError, load_settings
from sync import device_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fivestep", description="Dibao home-visit backend.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the API (migrates first in embedded SQLite mode)")
    serve.add_argument("--host", help="address to bind (default: FIVESTEP_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port (default: FIVESTEP_PORT or 8000)")
    serve.add_argument(
        "--demo", action="store_true", help="seed the demo district, users and households first"
    )
    serve.add_argument(
        "--workers", type=_workers, help="server processes on the one port (default: FIVESTEP_WORKERS or 1)"
    )

    commands.add_parser("migrate", help="upgrade the database schema to the latest version")
    commands.add_parser(
        "cleanup-uploads",
        help="remove expired resumable uploads and their staged bytes (the server also does it hourly)",
    )

    create = commands.add_parser("create-user", help="create a user bound to a jurisdiction")
    create.add_argument("username")
    create.add_argument("--role", required=True, choices=["field_worker", "reviewer", "approver", "admin"])
    create.add_argument("--jurisdiction", required=True, help="code of the node, e.g. C01")
    create.add_argument("--display-name", default=None)
    create.add_argument("--password", default=None, help="default: FIVESTEP_NEW_PASSWORD, else asked for")

    reset = commands.add_parser(
        "reset-password",
        help="give a user a new password and end their sessions (e.g. the last admin who lost theirs)",
    )
    reset.add_argument("username")
    reset.add_argument("--password", default=None, help="default: FIVESTEP_NEW_PASSWORD, else asked for")
    reset.add_argument(
        "--reactivate", action="store_true", help="also let a deactivated account sign in again"
    )

    admin = commands.add_parser("sync-admin", help="operate the sync feed")
    admin.add_argument(
        "action",
        choices=["purge-tombstones", "new-epoch"],
        help="purge-tombstones: forget deletions all devices should have seen (stale devices reset); "
        "new-epoch: after restoring a backup, make every device rebuild",
    )

    device_cli.add_commands(commands)

    args = parser.parse_args(argv)
    if args.command == "device":  # the device client needs no server configuration
        try:
            return device_cli.run(args)
        except BrokenPipeError:
            # `fivestep device status | head`: the reader has all it wanted. Quiet, as other tools are;
            # stdout is pointed at /dev/null so the interpreter's final flush cannot fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"fivestep: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(settings, args)
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command == "cleanup-uploads":
        return asyncio.run(_cleanup_uploads(settings))
    if args.command == "sync-admin":
        return asyncio.run(_sync_admin(settings, args.action))
    if args.command == "reset-password":
        return asyncio.run(_reset_password(settings, args))
    return asyncio.run(_create_user(settings, args))


def _workers(text: str) -> int:
    count = int(text)
    if not 1 <= count <= 64:
        raise argparse.ArgumentTypeError("workers is between 1 and 64")
    return count


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError("a port is between 1 and 65535")
    return port


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    workers = settings.workers if args.workers is None else args.workers
    settings = msgspec.structs.replace(settings, host=host, port=port)
    # uvicorn stops taking connections on SIGTERM/SIGINT, finishes requests in flight, then runs the lifespan's
    # shutdown (closing the pools). Afterwards it re-raises the signal to the handler that was there before it
    # started; a no-op handler there lets a graceful stop exit 0 rather than "killed by signal" (143).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "timeout_graceful_shutdown": 20,
        "access_log": False,
    }
    # The one-time work (migration, shipped checklists, demo seed) runs once, in a process of its own,
    # before any server process starts: with several workers it must not run in each, and the serving
    # process then never loads Alembic nor keeps what migrating and seeding left on its heap (idle RSS 96
    # instead of 125 MB, and image ingest's peak is measured against 200 MB).
    _prepare_in_child(settings, demo=args.demo)
    if workers == 1:
        uvicorn.run(_built_app(settings), **options)
        return 0
    # Several processes on one port (uvicorn's workers): each builds its app from the environment, which
    # carries this command's overrides.
    os.environ.update({"FIVESTEP_HOST": host, "FIVESTEP_PORT": str(port)})
    uvicorn.run("server.cli:worker_app", factory=True, workers=workers, **options)
    return 0


def worker_app() -> Any:
    """The app each process of `fivestep serve --workers N` runs (settings from the environment)."""
    return _built_app(load_settings())


def _built_app(settings: Settings) -> Any:
    """The app of a server process; `_prepare_in_child` did the one-time work before."""
    from server.app import create_app
    from server.gc_freeze import freeze_startup_objects
    from server.malloc import configure

    configure()  # before the image workers' threads start allocating
    app = create_app(settings, prepared=True)
    freeze_startup_objects()  # once everything imported and built is in place
    return app


def _prepare_in_child(settings: Settings, *, demo: bool) -> None:
    """`_prepare` in a child process (spawned: nothing of this one's state is copied into it)."""
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=_prepare_sync, args=(settings, demo))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"fivestep: preparing the database failed (exit {child.exitcode})")


def _prepare_sync(settings: Settings, demo: bool) -> None:
    from sqlalchemy.exc import OperationalError

    try:
        asyncio.run(_prepare(settings, demo=demo))
    except (OSError, OperationalError) as exc:
        # No database there (yet): the operator needs this line, not a traceback. PostgreSQL refusing the
        # connection comes as an OperationalError around the socket's error (server/db/engine.py).
        unreachable = exc.orig if isinstance(exc, OperationalError) else exc
        if not isinstance(unreachable, OSError):
            raise
        print(f"fivestep: cannot reach the database: {unreachable}", file=sys.stderr)
        raise SystemExit(1) from None


async def _prepare(settings: Settings, *, demo: bool) -> None:
    """The one-time work of a starting server, and the embedded mode's signing secret."""
    from server.app import prepare
    from server.config import resolve_secret
    from server.db.engine import Database

    resolve_secret(settings)  # generated once here, not by several workers at the same moment
    db = Database(settings.database_url)
    try:
        await prepare(db, settings, demo=demo)
    finally:
        await db.dispose()


async def _migrate(settings: Settings) -> int:
    from server.db.engine import Database
    from server.db.migrate import current_revision, upgrade

    db = Database(settings.database_url)
    try:
        await upgrade(db)
        print(f"database at revision {await current_revision(db)}")
    finally:
        await db.dispose()
    return 0


async def _cleanup_uploads(settings: Settings) -> int:
    import anyio

    from media.stores import open_store
    from server.config import resolve_secret
    from server.db.engine import Database
    from server.services.photos import cleanup

    db = Database(settings.database_url)
    store = await open_store(
        settings.blob_store,
        base_url=settings.public_url or f"http://{settings.host}:{settings.port}",
        secret=resolve_secret(settings).encode(),
        threads=settings.blob_threads,
        timeout=settings.blob_timeout_seconds,
    )
    try:
        limiter = anyio.CapacityLimiter(settings.image_workers)  # stranded uploads are processed first
        print(f"removed {await cleanup(db, store, limiter)} expired uploads")
    finally:
        await store.close()
        await db.dispose()
    return 0


async def _sync_admin(settings: Settings, action: str) -> int:
    from server.db.engine import Database
    from server.services import sync_admin
    from server.services.actor import SYSTEM

    db = Database(settings.database_url)
    try:
        async with db.write_session() as session:
            if action == "new-epoch":
                print(
                    f"new sync epoch {await sync_admin.new_epoch(session, SYSTEM)}: every device will rebuild"
                )
            else:
                purged, floor = await sync_admin.purge_tombstones(session, SYSTEM)
                print(f"purged {purged} tombstones; devices behind sequence {floor} will rebuild")
    finally:
        await db.dispose()
    return 0


async def _create_user(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from server.db.engine import Database
    from server.db.migrate import upgrade
    from server.db.models import Jurisdiction
    from server.errors import DomainError
    from server.services.actor import SYSTEM
    from server.services.users import create_user

    password = args.password or os.environ.get("FIVESTEP_NEW_PASSWORD") or getpass.getpass("password: ")
    db = Database(settings.database_url)
    try:
        if db.is_sqlite and settings.auto_migrate:
            await upgrade(db)
        async with db.write_session() as session:
            node_id = (
                await session.execute(select(Jurisdiction.id).where(Jurisdiction.code == args.jurisdiction))
            ).scalar_one_or_none()
            if node_id is None:
                print(f"fivestep: no jurisdiction with code {args.jurisdiction!r}", file=sys.stderr)
                return 1
            data = UserCreate(
                username=args.username,
                display_name=args.display_name or args.username,
                role=args.role,
                jurisdiction_id=node_id,
                password=password,
            )
            try:
                user = await create_user(
                    session, SYSTEM, msgspec.convert(msgspec.to_builtins(data), UserCreate)
                )
            except (DomainError, msgspec.ValidationError) as exc:
                print(f"fivestep: {getattr(exc, 'message', exc)}", file=sys.stderr)
                return 1
        print(f"created {user.username} ({user.role}) id {user.id}")
        return 0
    finally:
        await db.dispose()


async def _reset_password(settings: Settings, args: argparse.Namespace) -> int:
    """The way back in when no admin who could reset it through the API can sign in: whoever runs the
    server's command line may. Audited as the system actor, like create-user."""
    from sqlalchemy import select

    from server.db.engine import Database
    from server.db.models import User
    from server.domain.usernames import read_username
    from server.errors import DomainError
    from server.services.actor import SYSTEM
    from server.services.users import reset_password, set_active

    password = args.password or os.environ.get("FIVESTEP_NEW_PASSWORD") or getpass.getpass("new password: ")
    try:
        password = msgspec.convert(password, NewPassword)
    except msgspec.ValidationError:
        print("fivestep: a password is 8 to 256 characters", file=sys.stderr)
        return 1
    db = Database(settings.database_url)
    try:
        async with db.write_session() as session:
            user_id = (
                await session.execute(select(User.id).where(User.username == read_username(args.username)))
            ).scalar_one_or_none()
            if user_id is None:
                print(f"fivestep: no user named {args.username!r}", file=sys.stderr)
                return 1
            try:
                user = await reset_password(session, SYSTEM, user_id, password)
                if args.reactivate:
                    user = await set_active(session, SYSTEM, user_id, True)
            except DomainError as exc:
                print(f"fivestep: {exc.message}", file=sys.stderr)
                return 1
        print(f"new password set for {user.username}; their sessions ended")
        if not user.active:
            print(f"{user.username} is deactivated: add --reactivate to let them sign in", file=sys.stderr)
        return 0
    finally:
        await db.dispose()


if __name__ == "__main__":
    sys.exit(main())
