"""The reference device client: a real offline replica in a local SQLite file (docs/sync-protocol.md).

Local tables:
- `confirmed`: what the server has confirmed, one row per record, with its version;
- `rebuild`: after a reset, the fresh snapshot as its pages arrive; it replaces `confirmed` in the
  transaction of its last page, so a rebuild cut off midway leaves the device showing what it showed;
- `pending`: the mutation queue; an edit IS a row here, written in one local transaction with the
  next seq, so an edit cannot exist without its queue entry;
- `meta`: client id, token, cursor, next seq, highest seq the server has acknowledged;
- `photos`: the photo files taken, kept in the device's own folder until the server holds them
  (`sync/photo_queue.py`).

What the user sees is `confirmed` with the pending edits replayed on top (`view`), less those a push
answered `rejected`. Sync pushes before it pulls; a pending mutation leaves the queue only when a
complete pull reports last_mutation_seq at or beyond it, because only then does `confirmed` already hold
its effects.
"""

from __future__ import annotations

import fcntl
import json
import random
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec

from schemas.sync import SCHEMA_VERSION, PullResponse, PushResponse
from sync import answer_merge
from sync.errors import (
    DeviceOfAnotherUser,
    NetworkError,
    NotSignedIn,
    PayloadTooLarge,
    PushHeldBack,
    QueueBehindServer,
    ServerError,
    SyncBusy,
    UnsendableEdit,
    network_errors,
)
from sync.photo_queue import PhotoQueue, UploadReport
from sync.private_files import owner_only
from sync.tus_client import CHUNK_SIZE, LocalFile, RawTransport

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS confirmed (
    entity TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL,
    parent TEXT, PRIMARY KEY (entity, id));
CREATE INDEX IF NOT EXISTS confirmed_parent ON confirmed (parent);
CREATE TABLE IF NOT EXISTS rebuild (
    entity TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL,
    parent TEXT, PRIMARY KEY (entity, id));
CREATE INDEX IF NOT EXISTS rebuild_parent ON rebuild (parent);
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY, mutation_id TEXT NOT NULL UNIQUE, op TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outcomes (
    seq INTEGER PRIMARY KEY, status TEXT NOT NULL, code TEXT, conflict_ids TEXT NOT NULL);
"""
_TARGETS = ("member_id", "household_id", "visit_id", "conflict_id")
"""A mutation's field naming the record it aims at (a create names the record in its payload)."""
LOCKED_VISITS = ("approved", "rejected")
"""Visit states that take no answer (docs/workflow.md); an amendment makes a new revision."""
Shape = TypeVar("Shape", PushResponse, PullResponse)
PARENT_KEYS = {
    "member": "household_id",
    "visit": "household_id",
    "observation": "visit_id",
    "visit_event": "visit_id",
}


class Transport(Protocol):
    def __call__(self, path: str, body: dict[str, Any], token: str | None) -> tuple[int, Any]:
        """POST `body` as JSON to `path`; return (status, decoded JSON). Raise NetworkError if lost."""
        ...


def httpx_transport(client: Any) -> Transport:
    """A transport over an httpx.Client (a real server, or Litestar's TestClient in-process)."""

    def post(path: str, body: dict[str, Any], token: str | None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with network_errors():
            response = client.post(path, content=msgspec.json.encode(body), headers=headers | _JSON)
        return response.status_code, _answer(response)

    return post


def _asked_to_wait(problem: Exception) -> float:
    """The seconds a busy server asked for (`details.retry_after_seconds`, as its Retry-After header): a
    retry sooner finds it as busy."""
    if not isinstance(problem, ServerError):
        return 0.0
    details = problem.error.get("details")
    wait = details.get("retry_after_seconds") if isinstance(details, dict) else None
    return float(min(wait, 300)) if isinstance(wait, int | float) and wait > 0 else 0.0


def _answer(response: Any) -> Any:
    """The server's JSON answer. Anything else came from something between the tablet and the server (a
    proxy's 502 page while the server restarts, a captive portal's 200): the server's answer, if it
    gave one, is lost."""
    if not response.content:
        return None
    try:
        return msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        if response.status_code == 413:  # a proxy's body limit (nginx's page): the request was too large
            raise PayloadTooLarge(None) from None
        raise NetworkError(
            f"HTTP {response.status_code}: the answer is not the server's (not JSON)"
        ) from None


_JSON = {"Content-Type": "application/json"}


def _servers(status: int, answer: Any) -> dict[str, Any]:
    """The server's answer: a JSON object, with `error` unless 200. Anything else (a captive portal's
    redirect to its sign-in page, an empty answer) came from something on the way: the server's is lost."""
    if status == 413:  # the server's payload_too_large, or a proxy's page: either way, too large to pass
        raise PayloadTooLarge(answer)
    if status == 200 and isinstance(answer, dict):
        return answer
    if status != 200 and isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        raise ServerError(status, answer)
    raise NetworkError(f"HTTP {status}: the answer is not the server's")


_HANDOVER = "/api/v1/sync/handover"
_TABLET_STAYS = frozenset({"author_active", "beyond_jurisdiction"})
"""A handover's refusals that leave the tablet to its previous user (a 404 too: the server knows no such
client, or no handover at all)."""


def _handed_over(_seq: int) -> tuple[str, str | None]:
    """The outcome a handed-over queue's photo files are sent under: every answer naming them is with a
    supervisor now."""
    return "handed_over", None


def _read(answer: dict[str, Any], shape: type[Shape]) -> Shape:
    try:
        return msgspec.convert(answer, shape)
    except msgspec.ValidationError as exc:
        raise NetworkError(f"the answer is not the server's ({exc})") from None


@dataclass(frozen=True)
class RefusedEdit:
    """An edit the server refused for good and kept for a supervisor (docs/sync-protocol.md, `rejected`):
    what the worker needs to know it did not land, and why."""

    seq: int
    op: str
    record: str | None
    """The household, member, visit or conflict it aimed at."""
    code: str | None


@dataclass
class SyncReport:
    pushed: int = 0
    pulled: int = 0
    confirmed: int = 0
    rejected: list[int] = field(default_factory=list)
    refused: list[RefusedEdit] = field(default_factory=list)
    """The rejected edits, each with what it aimed at and the server's code."""
    conflicts: int = 0
    """Conflict records the pushed mutations opened (a supervisor will look at them)."""
    resets: int = 0
    photos: UploadReport = field(default_factory=UploadReport)
    held_back: int | None = None
    """The seq the server could not apply now (`stopped: transient`): it and the edits after it wait."""


class Device:
    def __init__(
        self,
        path: str | Path,
        transport: Transport,
        *,
        push_batch: int = 100,
        pull_limit: int = 1000,
        clock_offset_s: float = 0.0,
        uploads: RawTransport | None = None,
        photo_dir: str | Path | None = None,
        upload_chunk: int = CHUNK_SIZE,
    ) -> None:
        self.clock_offset_s = clock_offset_s
        """A tablet's clock may be days off: it is only ever reported, never trusted."""
        if str(path) not in ("", ":memory:"):
            owner_only(Path(path))
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self.transport = transport
        self.push_batch, self.pull_limit = push_batch, pull_limit
        self.uploads = uploads
        """Photos are sent only when there is a raw HTTP transport for tus; edits sync without one."""
        self.photos = PhotoQueue(
            self.db, Path(photo_dir) if photo_dir else Path(path).with_suffix(".photos"), self._tx
        )
        self.upload_chunk = upload_chunk
        self.handed_over: str | None = None
        """What the last sign-in handed over of the previous user's (docs/sync-protocol.md, "Handing a
        tablet over"), in words; None when it handed nothing over."""
        self.deleted: str | None = None
        """What the last sign-in deleted of the previous user's, in words: photo files of answers the
        server refused, which it would not take from the new user (see `login`); None when nothing."""
        memory = str(path) in ("", ":memory:")
        self.sync_lock_path = (
            None if memory else Path(path).resolve().with_name(Path(path).name + ".sync-lock")
        )
        """Beside the database file; an in-memory database is one object of this process, and has none."""
        if self._meta("client_id") is None:
            with self._tx():
                self._set("client_id", str(uuid.uuid4()))
                self._set("next_seq", "1")
                self._set("acked_seq", "0")

    def now(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + self.clock_offset_s))

    # -- local state ------------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set(self, key: str, value: str | None) -> None:
        if value is None:
            self.db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def client_id(self) -> str:
        return self._meta("client_id") or ""

    @property
    def username(self) -> str | None:
        """Who signed in on this device last (the replica is theirs), if anyone did."""
        return self._meta("username")

    @property
    def cursor(self) -> str | None:
        return self._meta("cursor")

    @property
    def never_synced(self) -> bool:
        """No pull page has reached this replica yet (a rebuild under way keeps what it showed)."""
        return self.cursor is None and self._meta("rebuilding") is None

    def pending(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT body FROM pending ORDER BY seq").fetchall()
        return [json.loads(body) for (body,) in rows]

    def confirmed(self, entity: str) -> dict[str, dict[str, Any]]:
        rows = self.db.execute("SELECT id, data FROM confirmed WHERE entity = ?", (entity,)).fetchall()
        return {i: json.loads(data) for i, data in rows}

    def record(self, entity: str, record_id: str | uuid.UUID) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT data FROM confirmed WHERE entity = ? AND id = ?", (entity, str(record_id))
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    # -- edits: each one is a queued mutation, written in one local transaction --------------------

    def enqueue(self, op: str, **payload: Any) -> dict[str, Any]:
        with self._tx():
            return self._queue(op, payload)

    def _queue(self, op: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Append a mutation to the queue; the caller holds the local transaction."""
        if _holds_nul(payload):
            # The server refuses a whole batch holding one (422 nul_character), so the queue would stop here.
            raise UnsendableEdit(
                "a text of this edit holds a NUL character (\\u0000), which no text may hold"
            )
        seq = int(self._meta("next_seq") or "1")
        mutation = {"op": op, "seq": seq, "mutation_id": str(uuid.uuid4()), **payload}
        mutation.setdefault("device_time", self.now())
        body = msgspec.json.encode(mutation).decode()
        self.db.execute(
            "INSERT INTO pending (seq, mutation_id, op, body) VALUES (?, ?, ?, ?)",
            (seq, mutation["mutation_id"], op, body),
        )
        self._set("next_seq", str(seq + 1))
        return dict(json.loads(body))

    def update_household(self, household_id: str, **new: Any) -> dict[str, Any]:
        return self._update("household", household_id, new)

    def update_member(self, member_id: str, **new: Any) -> dict[str, Any]:
        return self._update("member", member_id, new)

    def _update(self, entity: str, record_id: str, new: dict[str, Any]) -> dict[str, Any]:
        base = self.record(entity, record_id) or {}
        seen = self.view(entity).get(record_id, base)
        changes = {name: {"old": seen.get(name), "new": value} for name, value in new.items()}
        key = "household_id" if entity == "household" else "member_id"
        return self.enqueue(
            f"{entity}.update.v1", **{key: record_id}, base_version=base.get("version", 0), changes=changes
        )

    def remove_member(self, member_id: str, reason: str) -> dict[str, Any]:
        base = self.record("member", member_id) or {}
        return self.enqueue(
            "member.remove.v1", member_id=member_id, base_version=base.get("version", 0), reason=reason
        )

    def archive_household(self, household_id: str, reason: str) -> dict[str, Any]:
        base = self.record("household", household_id) or {}
        return self.enqueue(
            "household.archive.v1",
            household_id=household_id,
            base_version=base.get("version", 0),
            reason=reason,
        )

    def answer(self, visit_id: str, observations: list[dict[str, Any]]) -> dict[str, Any]:
        return self.enqueue("visit.answer.v1", visit_id=visit_id, observations=observations)

    def answer_value(self, visit_id: str, template: str, item: str, row_id: str | None = None) -> Any:
        """The item's current answer as this device sees it, or None: its confirmed answers in the
        server's order, then its pending ones, folded as the server folds them (sync/answer_merge.py)."""
        confirmed = []
        rows = self.db.execute(
            "SELECT data FROM confirmed WHERE entity = 'observation' AND parent = ?", (str(visit_id),)
        )
        for (data,) in rows:
            observation = json.loads(data)
            if _same_item(observation, template, item, row_id):
                confirmed.append(observation)
        confirmed.sort(key=lambda o: o["ordinal"])
        seen = {o["id"] for o in confirmed}
        pending = [
            observation
            for mutation in self._shown_pending()
            if mutation["op"] == "visit.answer.v1" and mutation["visit_id"] == str(visit_id)
            for observation in mutation["observations"]
            if _same_item(observation, template, item, row_id) and observation["id"] not in seen
        ]
        return answer_merge.current((o.get("value"), o.get("base")) for o in confirmed + pending)

    def attach_photo(
        self,
        visit_id: str,
        template: str,
        item: str,
        file: str | Path,
        *,
        view: str | None = None,
        gps: dict[str, Any] | None = None,
        row_id: str | None = None,
    ) -> dict[str, Any]:
        """Add a photo to a photo item's answer. The file is kept in the device's folder; the answer and the
        file's place in the upload queue are written in one local transaction; sync sends both."""
        local = self.photos.keep(Path(file))
        try:
            return self._queue_photo(local, visit_id, template, item, view, gps, row_id)
        except BaseException:
            self.photos.discard_if_unnamed(local)  # the edit was refused: no answer names the copy
            raise

    def _queue_photo(
        self,
        local: LocalFile,
        visit_id: str,
        template: str,
        item: str,
        view: str | None,
        gps: dict[str, Any] | None,
        row_id: str | None,
    ) -> dict[str, Any]:
        with self._tx():
            previous = self.answer_value(visit_id, template, item, row_id)
            base = previous if isinstance(previous, dict) else {"photos": []}
            photos = [p for p in base.get("photos", []) if p.get("sha256") != local.sha256]
            photos.append({"sha256": local.sha256, "view": view} if view else {"sha256": local.sha256})
            observation: dict[str, Any] = {
                "id": str(uuid.uuid4()),
                "template": template,
                "item": item,
                "value": {"photos": photos},
                "base": base,  # so a teammate's photos of the same item, sent meanwhile, are kept
                "device_time": self.now(),
            }
            if row_id:
                observation["row_id"] = row_id
            if gps:
                observation["gps"] = gps
            mutation = self._queue(
                "visit.answer.v1", {"visit_id": str(visit_id), "observations": [observation]}
            )
            self.photos.add(local, mutation["seq"])
        return mutation

    def photo_item_problem(self, visit_id: str, template: str, item: str) -> str | None:
        """Why a photo cannot go to this item, as far as this device knows; None if it can (or if the
        device lacks the checklist: the server judges anyway)."""
        visit = self.view("visit").get(str(visit_id))
        if visit is None:
            return f"no visit {visit_id} on this device (sync first?)"
        if visit.get("status") in LOCKED_VISITS:  # the server would refuse it `visit_locked`
            return f"the visit is {visit['status']} and locked: it takes no more answers"
        pinned = {t["code"]: t["version"] for t in visit.get("templates") or []}
        if template not in pinned:
            return f"the visit's checklists are {', '.join(sorted(pinned))}"
        body = next(
            (
                t["body"]
                for t in self.confirmed("template").values()
                if t.get("code") == template and t.get("version") == pinned[template]
            ),
            None,
        )
        if not isinstance(body, dict):
            return None
        kind = _item_types(body).get(item)
        if kind is None:
            return f"{template} has no item {item!r}"
        return None if kind == "photo" else f"{template} {item} is a {kind} item, not a photo item"

    def photo_queue(self) -> list[dict[str, Any]]:
        """Every photo file this device took, its state (waiting, stored, refused, held, lost) and the
        server's record's state once a pull brought one (expected until the bytes arrive, then present)."""
        return self.photos.entries(self.confirmed("photo"))

    def resolve(self, conflict_id: str, decision: str, value: Any = None) -> dict[str, Any]:
        return self.enqueue("conflict.resolve.v1", conflict_id=conflict_id, decision=decision, value=value)

    # -- the local view: confirmed state with pending edits replayed on top ------------------------

    def view(self, entity: str) -> dict[str, dict[str, Any]]:
        records = self.confirmed(entity)
        for mutation in self._shown_pending():
            _replay(entity, records, mutation)
        return records

    def _shown_pending(self) -> list[dict[str, Any]]:
        """The queued edits the device shows: an edit the server refused stays queued until a pull
        confirms it (Rule 3), but is no longer shown as if it had been taken."""
        rows = self.db.execute(
            "SELECT body FROM pending WHERE seq NOT IN (SELECT seq FROM outcomes WHERE status = 'rejected') "
            "ORDER BY seq"
        )
        return [json.loads(body) for (body,) in rows]

    # -- sync ------------------------------------------------------------------------------------

    def login(self, username: str, password: str, device_key: str | None = None) -> dict[str, Any]:
        body = {
            "username": username,
            "password": password,
            "device_id": device_key or self._device_key(),
        }
        self.handed_over = self.deleted = None
        answer = _servers(*self.transport("/api/v1/auth/login", body, None))
        user = dict(answer["user"])
        if not self._held_for_another(user):
            self._signed_in(answer["token"], user)
            return user
        with self._only_sync():  # not under a sync of the previous user's
            previous = self._meta("username")
            if unsent := self._unsent():
                try:
                    self._hand_over(answer["token"], unsent)
                except DeviceOfAnotherUser:
                    if not self._holds_only_held_files():
                        self._end_session(answer["token"])  # the tablet stays the previous user's
                        raise
                    # Files of refused answers alone never kept a tablet from its next user: their author
                    # can still sign in (and cannot send them either) or the server will not take them from
                    # this user. They go with the replica, as they did; the new user is told.
                    self.deleted = f"{unsent} of {previous}"
                    unsent = None
                except Exception:  # the tablet stays the previous user's: a session it will not use ends
                    self._end_session(answer["token"])
                    raise
            self._signed_in(answer["token"], user, start_over=True)
            self.handed_over = f"{unsent} of {previous}" if unsent else None
        return user

    def _hand_over(self, token: str, unsent: str) -> None:
        """The previous user's queue and photo files, sent under the new user's sign-in to be kept for a
        supervisor, when the previous user can no longer sign in (deactivated; docs/sync-protocol.md,
        "Handing a tablet over"). While they still can, or worked outside the new user's area, the tablet
        stays theirs until they sync: DeviceOfAnotherUser. A lost answer fails the sign-in, which is
        safe to try again (the server answers a handover sent again as a push replayed). The caller ends
        the new session when this raises."""
        previous = self._meta("username")
        files = self.db.execute("SELECT count(*) FROM photos WHERE state IN ('waiting', 'held')")
        if files.fetchone()[0] and self.uploads is None:
            # Refused before anything is handed over: the tablet stays as it was.
            raise DeviceOfAnotherUser(f"{previous}'s photo files need a connection that can send photos")
        try:
            # Who the previous user was: the server needs it for a client it never saw (they worked offline
            # from their first sign-in); a database from before user ids were kept cannot say.
            author = {"author_id": held_by} if (held_by := self._meta("user_id")) else {}
            if self.db.execute("SELECT 1 FROM pending LIMIT 1").fetchone() is None:
                # Photo files alone: the server still judges whether they are the new user's to hand in.
                body = {"client_id": self.client_id, "schema_version": SCHEMA_VERSION, "mutations": []}
                self._post(_HANDOVER, body | author, token)
            self._push(SyncReport(), path=_HANDOVER, token=token, extra=author)
        except ServerError as exc:
            code = exc.code
            if exc.status != 404 and code not in _TABLET_STAYS:
                raise  # anything else (a busy server, a sign-in ended meanwhile) fails this sign-in
            held = f"this device still holds {unsent} of {previous}, which only it has"
            if code == "beyond_jurisdiction":  # the server does not say whether they can still sign in
                raise DeviceOfAnotherUser(
                    f"{held}, from outside your area: {previous} signs in and syncs first or, if they can "
                    "no longer sign in, a colleague of their area or a supervisor over it signs in to hand "
                    "it in"
                ) from None
            raise DeviceOfAnotherUser(f"{held}: sign in as {previous} and sync first") from None
        self.photos.release_held()
        if self.uploads is not None:
            # Every answer naming them was handed over: the files go as if taken, for the supervisor.
            sent = self.photos.send(self.uploads, token, _handed_over, chunk_size=self.upload_chunk)
            if sent.waiting:
                raise NetworkError(f"{sent.waiting} of {previous}'s photo files could not be sent yet")

    def _signed_in(self, token: str, user: dict[str, Any], *, start_over: bool = False) -> None:
        previous_users_photos: list[Path] = []
        with self._tx():
            if start_over:
                previous_users_photos = self._start_over()
            self._set("token", token)
            self._set("username", user["username"])
            self._set("user_id", str(user["id"]))
        for copy in previous_users_photos:  # after the commit: a rollback must not lose a copy still named
            copy.unlink(missing_ok=True)

    def _device_key(self) -> str:
        """The name this tablet signs in under, made from its first client id: it stays when another
        user's sign-in makes a new client id."""
        return self._meta("device_key") or f"dev-{self.client_id}"

    def _held_for_another(self, user: dict[str, Any]) -> bool:
        """Whether this database is the replica of another user than ``user`` (a database from before
        user ids were kept knows its user by name)."""
        held_id, held_name = self._meta("user_id"), self._meta("username")
        if held_id is not None:
            return held_id != str(user["id"])
        # Kept as typed: the server signs a name in stripped and in lower case.
        return held_name is not None and held_name.strip().lower() != user["username"]

    def _unsent(self) -> str | None:
        """What of the signed-in user only this device holds: queued edits, photo files not yet sent, and
        photo files held for answers the server refused (kept for a supervisor, who may keep the answer)."""
        edits = self.db.execute("SELECT count(*) FROM pending").fetchone()[0]
        photos = self.db.execute("SELECT count(*) FROM photos WHERE state = 'waiting'").fetchone()[0]
        refused = self.db.execute("SELECT count(*) FROM photos WHERE state = 'held'").fetchone()[0]
        unsent = [f"{edits} edit(s) not yet confirmed"] if edits else []
        unsent += [f"{photos} photo file(s) to send"] if photos else []
        unsent += [f"{refused} photo file(s) of refused answers"] if refused else []
        return " and ".join(unsent) or None

    def _holds_only_held_files(self) -> bool:
        """Whether all the previous user left unsent is photo files held for refused answers."""
        rest = self.db.execute(
            "SELECT EXISTS (SELECT 1 FROM pending) OR EXISTS (SELECT 1 FROM photos WHERE state = 'waiting')"
        )
        return not rest.fetchone()[0]

    def _start_over(self) -> list[Path]:
        """Signed in as another user: the replica, its cursor and its client id were the previous user's
        (the server refuses that client id to anyone else), and so were the photo files the server never
        took (held, refused, lost): pictures inside households' homes. The caller holds the local
        transaction; it deletes the returned photo copies once that has committed."""
        self.db.execute("DELETE FROM pending")  # empty, or handed over for a supervisor (_hand_over)
        self.db.execute("DELETE FROM confirmed")
        self.db.execute("DELETE FROM rebuild")
        self.db.execute("DELETE FROM outcomes")
        self._set("cursor", None)
        self._set("rebuilding", None)
        self._set("rebuild_cursor", None)
        self._set("device_key", self._device_key())
        self._set("client_id", str(uuid.uuid4()))
        self._set("next_seq", "1")
        self._set("acked_seq", "0")
        return self.photos.forget_all()

    def _end_session(self, token: str) -> None:
        """Sign out a session this device will not use; if that fails, it expires on its own."""
        with suppress(NetworkError):
            self.transport("/api/v1/auth/logout", {}, token)

    def sync(self) -> SyncReport:
        """Push everything, then pull to the end. Raises NetworkError/ServerError; safe to call again."""
        report = SyncReport()
        with self._only_sync():
            try:
                self._push(report)
            except QueueBehindServer:
                # A restored server that never saw this device's confirmed mutations: the pull shows it
                # the old cursor (and rebuilds this replica), then the queue goes on from what is held.
                self._pull(report)
                self._push(report)
            self._upload_photos(report)
            self._pull(report)
            if self.photos.held_among(self._expected_photos()):
                # A supervisor kept an answer the server had refused (re-entered it): the pull shows its
                # photo expected, and the file held here goes now rather than at the next sync; the
                # pull after it brings the photo present.
                self._upload_photos(report)
                self._pull(report)
        return report

    @contextmanager
    def _only_sync(self) -> Iterator[None]:
        """One sync of this device at a time (a scheduled sync and a user's, or two CLI runs): two would
        send the same photo twice and could apply pulled pages out of order. Raises SyncBusy at once.
        `sync`, `push`, `upload_photos` and `pull` each hold it."""
        if self.sync_lock_path is None:
            yield
            return
        with open(self.sync_lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SyncBusy(f"another sync of this device is running ({self.sync_lock_path})") from None
            yield  # closing the file releases the lock, as does the process ending however it ends

    def sync_with_retry(
        self,
        attempts: int = 8,
        base_delay: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[Exception, float], None] | None = None,
    ) -> SyncReport:
        """Sync, retrying lost requests, server errors and a push the server could not finish, with
        jittered exponential backoff: ``attempts`` retries after the first try. ``on_retry`` hears each
        failure and the seconds until the next try (eight retries wait about two minutes in all: someone
        watching needs to know why). The last report may still say ``held_back``: edits wait."""
        attempt = 0
        while True:
            last = attempt == attempts
            try:
                report = self.sync()
            except NetworkError as exc:
                if last:
                    raise
                problem: Exception = exc
            except ServerError as exc:
                if last or (exc.status < 500 and exc.status != 429):
                    raise
                problem = exc
            else:
                if report.held_back is None or last:
                    return report
                problem = PushHeldBack(report.held_back)
            delay = base_delay * (2**attempt) * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not secrets
            delay = max(delay, _asked_to_wait(problem))
            if on_retry is not None:
                on_retry(problem, delay)
            sleep(delay)
            attempt += 1

    def push(self, report: SyncReport | None = None) -> None:
        """Send the pending mutations, a batch at a time, until the server has them all."""
        with self._only_sync():
            self._push(report or SyncReport())

    def _push(
        self,
        report: SyncReport,
        *,
        path: str = "/api/v1/sync/push",
        token: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        # Each push starts at the oldest pending mutation, acknowledged or not: until a pull confirms it,
        # the server may have lost it (restored from a backup taken before it), and a replay of one it
        # still has just returns the stored result. Within the push, batches follow the acknowledgements.
        after, size = 0, self.push_batch
        while True:
            batch = self.db.execute(
                "SELECT body FROM pending WHERE seq > ? ORDER BY seq LIMIT ?", (after, size)
            ).fetchall()
            if not batch:
                return
            mutations = [json.loads(body) for (body,) in batch]
            body = {
                "client_id": self.client_id,
                "schema_version": SCHEMA_VERSION,
                "mutations": mutations,
                "device_now": self.now(),
            } | (extra or {})
            try:
                answer = _read(self._post(path, body, token), PushResponse)
            except PayloadTooLarge:
                if len(mutations) == 1:
                    raise
                # Larger than the server or a proxy on the way takes: sending it again would never pass.
                size = len(mutations) // 2
                continue
            self._record_outcomes(answer, report)
            if answer.stopped == "transient":
                # The server will take the rest on a later sync; photos and the pull still run now.
                report.held_back = answer.expected_seq or answer.last_mutation_seq + 1
                return
            if answer.stopped == "out_of_order":
                self._require_held(answer.last_mutation_seq + 1)
            elif not answer.results:
                return
            after = int(self._meta("acked_seq") or "0")

    def upload_photos(self, report: SyncReport | None = None) -> None:
        """Send the waiting photo files whose answers the server took (sync/photo_queue.py)."""
        with self._only_sync():
            self._upload_photos(report or SyncReport())

    def _upload_photos(self, report: SyncReport) -> None:
        if self.uploads is None:
            return
        sent = self.photos.send(
            self.uploads,
            self._meta("token") or "",
            self._outcome,
            chunk_size=self.upload_chunk,
            expected=self._expected_photos(),
        )
        report.photos = report.photos.then(sent)

    def _expected_photos(self) -> set[str]:
        """The photos the server expects, as the last pull showed them: an answer naming them was taken.
        Only asked about files held here, so a tablet holding none reads no photo record (every sync asks)."""
        if self.db.execute("SELECT 1 FROM photos WHERE state = 'held' LIMIT 1").fetchone() is None:
            return set()
        rows = self.db.execute(
            "SELECT id FROM confirmed WHERE entity = 'photo' AND json_extract(data, '$.state') = 'expected'"
        )
        return {str(sha) for (sha,) in rows}

    def _outcome(self, seq: int) -> tuple[str, str | None] | None:
        row = self.db.execute("SELECT status, code FROM outcomes WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else (str(row[0]), row[1])

    def _require_held(self, seq: int) -> None:
        held = self.db.execute("SELECT 1 FROM pending WHERE seq = ?", (seq,)).fetchone()
        if held is None:
            raise QueueBehindServer(seq)

    def _refused(self, seq: int, code: str | None) -> RefusedEdit:
        row = self.db.execute("SELECT body FROM pending WHERE seq = ?", (seq,)).fetchone()
        mutation = json.loads(row[0]) if row else {}
        created = mutation.get("member") or mutation.get("household") or {}
        record = created.get("id") or next((mutation[key] for key in _TARGETS if key in mutation), None)
        return RefusedEdit(seq, str(mutation.get("op", "")), record, code)

    def _record_outcomes(self, answer: PushResponse, report: SyncReport) -> None:
        with self._tx():
            for result in answer.results:
                self.db.execute(
                    "INSERT OR REPLACE INTO outcomes (seq, status, code, conflict_ids) VALUES (?, ?, ?, ?)",
                    (
                        result.seq,
                        result.status,
                        result.code,
                        json.dumps([str(c) for c in result.conflict_ids]),
                    ),
                )
                if result.status == "rejected":
                    report.rejected.append(result.seq)
                    report.refused.append(self._refused(result.seq, result.code))
                elif result.status == "applied_with_conflict":
                    report.conflicts += len(result.conflict_ids)
            report.pushed += len(answer.results)
            # Only a hint of what not to send again: the queue itself shrinks on pull.
            self._set("acked_seq", str(answer.last_mutation_seq))

    def pull(self, report: SyncReport | None = None) -> None:
        """Pull pages until the end, applying each with its cursor in one local transaction."""
        with self._only_sync():
            self._pull(report or SyncReport())

    def _pull(self, report: SyncReport) -> None:
        while True:
            body = {
                "client_id": self.client_id,
                "cursor": self._meta(self._cursor_key()),
                "schema_version": SCHEMA_VERSION,
                "limit": self.pull_limit,
                "device_now": self.now(),
            }
            page = _read(self._post("/api/v1/sync/pull", body), PullResponse)
            if page.reset_required:
                self._reset()
                report.resets += 1
                continue
            self._apply(page)
            report.pulled += len(page.changes)
            if not page.has_more:
                report.confirmed += self._confirm(page.last_mutation_seq)
                return

    def _post(self, path: str, body: dict[str, Any], token: str | None = None) -> Any:
        token = token or self._meta("token")
        if token is None:  # the server would answer 401; without one, retrying would only wait
            raise NotSignedIn
        return _servers(*self.transport(path, body, token))

    def _reset(self) -> None:
        """Rebuild from a fresh snapshot, into `rebuild` until its last page; pending edits stay and are
        pushed again. The old cursor can no longer be served."""
        with self._tx():
            self.db.execute("DELETE FROM rebuild")
            self._set("cursor", None)
            self._set("rebuilding", "1")
            self._set("rebuild_cursor", None)
            self._set("acked_seq", "0")

    def _replica(self) -> str:
        """The table pulled pages go to: `rebuild` while a rebuild is under way."""
        return "rebuild" if self._meta("rebuilding") else "confirmed"

    def _cursor_key(self) -> str:
        return "rebuild_cursor" if self._meta("rebuilding") else "cursor"

    def _apply(self, page: PullResponse) -> None:
        with self._tx():
            table = self._replica()
            for change in page.changes:
                if change.op == "upsert" and change.data is not None:
                    self._upsert(table, change.entity, change.id, change.version, change.data)
                elif change.op == "delete":
                    self._forget(table, change.entity, change.id)
                else:
                    self._drop(table, change.id)
            self._set(self._cursor_key(), page.cursor)
            if table == "rebuild" and not page.has_more:
                self._rebuilt(page.cursor)

    def _rebuilt(self, cursor: str) -> None:
        """The fresh snapshot is whole: it becomes what the device shows. The caller holds the transaction."""
        self.db.execute("DELETE FROM confirmed")
        self.db.execute("INSERT INTO confirmed SELECT * FROM rebuild")
        self.db.execute("DELETE FROM rebuild")
        self._set("cursor", cursor)
        self._set("rebuilding", None)
        self._set("rebuild_cursor", None)

    def _upsert(self, table: str, entity: str, record_id: str, version: int, data: dict[str, Any]) -> None:
        # Monotonic reads: never replace a record by an older version of it.
        parent = data.get(PARENT_KEYS.get(entity, ""))
        self.db.execute(
            f"INSERT INTO {table} (entity, id, version, data, parent) VALUES (?, ?, ?, ?, ?) "  # noqa: S608
            "ON CONFLICT (entity, id) DO UPDATE SET version = excluded.version, data = excluded.data, "
            f"parent = excluded.parent WHERE excluded.version >= {table}.version",
            (
                entity,
                record_id,
                version,
                msgspec.json.encode(data).decode(),
                None if parent is None else str(parent),
            ),
        )

    # `table` below is always `confirmed` or `rebuild` (`_replica`), never text from elsewhere.

    def _forget(self, table: str, entity: str, record_id: str) -> None:
        self.db.execute(f"DELETE FROM {table} WHERE entity = ? AND id = ?", (entity, record_id))  # noqa: S608

    def _drop(self, table: str, record_id: str) -> None:
        """A record left this device's scope: forget it and everything hanging under it."""
        under = self.db.execute(f"SELECT id FROM {table} WHERE parent = ?", (record_id,))  # noqa: S608
        for (child,) in under.fetchall():
            self._drop(table, child)
        self.db.execute(f"DELETE FROM {table} WHERE id = ?", (record_id,))  # noqa: S608

    def _confirm(self, last_mutation_seq: int) -> int:
        with self._tx():
            # A photo file is sent only for an answer known taken: an answer whose push result was never
            # heard (lost, then a pull on its own confirmed it) stays until a push replays it and says.
            unheard = [s for s in sorted(self.photos.answers_waited_on()) if self._outcome(s) is None]
            gone = self.db.execute(
                "DELETE FROM pending WHERE seq <= ? AND seq NOT IN (SELECT value FROM json_each(?))",
                (last_mutation_seq, json.dumps(unheard)),
            ).rowcount
        return int(gone)

    def close(self) -> None:
        self.db.close()


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(v) for v in value)
    return False


def _item_types(template: dict[str, Any]) -> dict[str, str]:
    """Item path (`group.child` inside repeat groups) -> item type, of a template's body."""
    found: dict[str, str] = {}

    def walk(items: list[dict[str, Any]], prefix: str) -> None:
        for entry in items:
            path = prefix + str(entry.get("code"))
            found[path] = str(entry.get("type"))
            walk(entry.get("items") or [], path + ".")

    for section in template.get("sections") or []:
        walk(section.get("items") or [], "")
    return found


def _same_item(observation: dict[str, Any], template: str, item: str, row_id: str | None) -> bool:
    code = observation.get("template_code", observation.get("template"))  # pulled, or as queued
    row = observation.get("row_id")
    return code == template and observation["item"] == item and (None if row is None else str(row)) == row_id


def _replay(entity: str, records: dict[str, dict[str, Any]], mutation: dict[str, Any]) -> None:
    op = mutation["op"]
    if op == f"{entity}.update.v1":
        key = mutation.get("household_id") or mutation.get("member_id")
        if key in records:
            records[key] = {**records[key], **{f: c["new"] for f, c in mutation["changes"].items()}}
    elif op == f"{entity}.create.v1":
        data = dict(mutation[entity])
        parent = PARENT_KEYS.get(entity)
        if parent is not None and parent in mutation:  # a member's household is beside it, not in it
            data.setdefault(parent, mutation[parent])
        records[str(data["id"])] = data
    elif op in (f"{entity}.archive.v1", f"{entity}.remove.v1"):
        records.pop(str(mutation.get("household_id") or mutation.get("member_id")), None)
