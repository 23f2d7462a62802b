"""The app factory: settings in, a Litestar app out; storage opened and closed in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

import anyio
import msgspec
from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from media.stores import BlobStore, open_store
from schemas.config import Settings
from server.config import load_settings, resolve_secret
from server.db.engine import Database
from server.dependencies import provide_session, provide_settings
from server.errors import EXCEPTION_HANDLERS
from server.nul_guard import refuse_nul
from server.openapi_errors import JsonWithErrors, ScalarWithErrors, SwaggerWithErrors
from server.request_log import configure_logging, request_log_middleware
from server.request_sessions import session_closing_middleware
from server.routes.admin import AdminController
from server.routes.auth import AuthController
from server.routes.blobs import signed_blob
from server.routes.calendar import CalendarController
from server.routes.conflicts import ConflictController
from server.routes.direct_uploads import DirectUploadController
from server.routes.exports import ExportController
from server.routes.health import health
from server.routes.households import HouseholdController, MemberController
from server.routes.jurisdictions import JurisdictionController
from server.routes.photos import EvidenceController, PhotoController
from server.routes.sync import SyncController
from server.routes.templates import TemplateController
from server.routes.uploads import UploadController
from server.routes.visits import VisitController
from server.services.auth import forget_quiet_throttles
from server.services.photos import cleanup
from server.services.templates import install_shipped
from server.services.uploads import cleanup_periodically
from server.tus_edge import install as install_tus_edge

log = logging.getLogger("fivestep.app")
VERSION = "0.1.0"


async def prepare(db: Database, settings: Settings, *, demo: bool = False) -> None:
    """What a starting server does once: migrate in the embedded mode (production runs `fivestep
    migrate`), install the shipped checklists (idempotent; refuses a changed published template) and,
    asked for, seed the demo data."""
    if settings.auto_migrate and db.is_sqlite:
        from server.db.migrate import upgrade  # here: a server that does not migrate never loads Alembic

        await upgrade(db)
    async with db.write_session() as session:
        await install_shipped(session)
    if demo:
        from server.demo import seed

        await seed(db)


async def _hourly(db: Database, store: BlobStore, limiter: anyio.CapacityLimiter, settings: Settings) -> int:
    """The periodic housekeeping; how many expired uploads it removed."""
    await forget_quiet_throttles(db, settings)
    return await cleanup(db, store, limiter)


class Start(msgspec.Struct, frozen=True):
    """What an app's startup opens. `prepared`: the migration, shipped checklists and demo seed were done
    before (by `fivestep serve` for its worker processes, which would otherwise all do them at once)."""

    settings: Settings
    demo: bool = False
    prepared: bool = False


def start_next_on(app: Litestar, start: Start) -> None:
    """Have `app`'s next startup open `start`'s storage instead. A stopped app can be started again: the
    tests start one built app on many databases, as building one (registering its routes) costs about
    0.15 s, a thousand times a run."""
    app.state.start = start


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncGenerator[None, None]:
    """Storage opened for the app's life, from what `app.state.start` names."""
    start: Start = app.state.start
    settings = start.settings
    configure_logging(settings.log_level)
    db = Database(settings.database_url)
    base_url = settings.public_url or f"http://{settings.host}:{settings.port}"
    # Read once: the embedded mode keeps its generated secret in a file, and sign-ins key on it too.
    resolved = msgspec.structs.replace(settings, secret_key=resolve_secret(settings))
    store = await open_store(
        settings.blob_store,
        base_url=base_url,
        secret=resolved.secret_key.encode(),
        public_endpoint=settings.blob_public_endpoint,
        threads=settings.blob_threads,
        timeout=settings.blob_timeout_seconds,
    )
    app.state.db, app.state.store, app.state.settings = db, store, resolved
    app.state.image_limiter = anyio.CapacityLimiter(settings.image_workers)
    if not start.prepared:
        await prepare(db, settings, demo=start.demo)
    log.info("started", extra={"fields": {"database": db.engine.dialect.name, "store": type(store).__name__}})
    # Expired uploads and moot sign-in counters, now and hourly.
    cleaner = asyncio.create_task(
        cleanup_periodically(functools.partial(_hourly, db, store, app.state.image_limiter, resolved))
    )
    try:
        yield
    finally:
        cleaner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cleaner
        await store.close()
        await db.dispose()
        log.info("stopped")


def create_app(settings: Settings | None = None, *, demo: bool = False, prepared: bool = False) -> Litestar:
    """The API on `settings` (read from the environment if not given); see `Start` for the flags."""
    settings = settings or load_settings()
    app = Litestar(
        route_handlers=[
            health,
            signed_blob,
            AuthController,
            AdminController,
            JurisdictionController,
            HouseholdController,
            MemberController,
            TemplateController,
            VisitController,
            ExportController,
            CalendarController,
            SyncController,
            ConflictController,
            UploadController,
            DirectUploadController,
            PhotoController,
            EvidenceController,
        ],
        lifespan=[lifespan],
        dependencies={
            "db_session": Provide(provide_session),
            "settings": Provide(provide_settings, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[request_log_middleware, session_closing_middleware],
        before_request=refuse_nul,
        openapi_config=OpenAPIConfig(
            title="fivestep",
            version=VERSION,
            description="Dibao home-visit backend: checklists, evidence, offline sync, review.",
            path="/schema",
            render_plugins=[ScalarWithErrors(), SwaggerWithErrors(path="/swagger"), JsonWithErrors()],
        ),
        logging_config=None,
        debug=False,
    )
    start_next_on(app, Start(settings, demo=demo, prepared=prepared))
    install_tus_edge(app)
    return app
