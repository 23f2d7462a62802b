"""`fivestep device ...`: the reference client from a shell, for newcomers and for field debugging.

fivestep device login --server http://127.0.0.1:8000 demo-worker-1     (password: demo)
fivestep device sync
fivestep device status
fivestep device households
fivestep device edit HOUSEHOLD_ID address="解放街1号" recheck_class=B
fivestep device visits
fivestep device photo VISIT_ID step.look home_photos kitchen.jpg --view kitchen --gps 38.04,114.51,8
fivestep device photos
fivestep device answer VISIT_ID step.look home_photos
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec

from schemas.households import HouseholdPatch
from sync.client import Device, httpx_transport
from sync.errors import (
    DeviceOfAnotherUser,
    NetworkError,
    PushHeldBack,
    ServerError,
    SyncBusy,
    UnsendableEdit,
)
from sync.tus_client import httpx_raw_transport

DEFAULT_DB = "./var/device.sqlite"
DEFAULT_SERVER = "http://127.0.0.1:8000"


def add_commands(commands: Any) -> None:
    device = commands.add_parser("device", help="the reference offline device client")
    device.add_argument(
        "--db", default=DEFAULT_DB, help=f"the device's local database (default {DEFAULT_DB})"
    )
    actions = device.add_subparsers(dest="action", required=True)
    login = actions.add_parser("login", help="sign in and remember the server")
    login.add_argument("username")
    login.add_argument(
        "--server",
        default=None,
        help=f"default: the server of this device's last sign-in, else {DEFAULT_SERVER}",
    )
    login.add_argument("--password", default=None, help="default: FIVESTEP_DEVICE_PASSWORD, else asked for")
    sync = actions.add_parser("sync", help="push pending edits, then pull (retries with backoff)")
    sync.add_argument(
        "--retries",
        type=int,
        default=8,
        help="tries again after a lost request or a server error (default 8)",
    )
    actions.add_parser(
        "status", help="who signed in where, client id, cursor, records held, edits and photos to send"
    )
    actions.add_parser("households", help="households as this device sees them (pending edits applied)")
    edit = actions.add_parser("edit", help="queue a household edit: FIELD=VALUE ... (values as JSON or text)")
    edit.add_argument("household_id")
    edit.add_argument("assignments", nargs="+")
    actions.add_parser("visits", help="visits as this device sees them")
    photo = actions.add_parser("photo", help="add a photo to a photo item's answer (sent on the next sync)")
    photo.add_argument("visit_id")
    photo.add_argument("template", help="template code, e.g. step.look")
    photo.add_argument("item", help="item path, e.g. home_photos")
    photo.add_argument("file", type=Path)
    photo.add_argument("--view", default=None, help="the photo's view, e.g. kitchen")
    photo.add_argument("--row", default=None, help="the repeat row's id, inside repeat groups")
    photo.add_argument("--gps", default=None, help="the device's fix: LAT,LON[,ACCURACY_M]")
    actions.add_parser("photos", help="photo files taken on this device and how their upload stands")
    answer = actions.add_parser("answer", help="an item's current answer as this device sees it (JSON)")
    answer.add_argument("visit_id")
    answer.add_argument("template", help="template code, e.g. step.look")
    answer.add_argument("item", help="item path, e.g. home_photos")
    answer.add_argument("--row", default=None, help="the repeat row's id, inside repeat groups")


def run(args: argparse.Namespace) -> int:
    server = _remembered_server(args)
    if not server.startswith(("http://", "https://")):
        return _failed(f"--server takes the server's URL, e.g. http://127.0.0.1:8000 (not {server!r})")
    with httpx.Client(base_url=server, timeout=30) as http:
        try:
            Path(args.db).parent.mkdir(parents=True, exist_ok=True)
            device = Device(args.db, httpx_transport(http), uploads=httpx_raw_transport(http))
        except (OSError, sqlite3.Error) as exc:
            return _failed(f"cannot open the device database {args.db} ({exc})")
        try:
            return _act(device, args, server)
        except (NetworkError, ServerError, SyncBusy, DeviceOfAnotherUser) as exc:
            return _failed(_explained(exc, device.username))
        finally:
            device.close()


def _failed(problem: str) -> int:
    """One line on stderr, exit status 1: a script (or a worker reading the screen) sees it failed."""
    print(f"device: {problem}", file=sys.stderr)
    return 1


def _explained(exc: Exception, username: str | None = None) -> str:
    """What went wrong, in words: the server's own message rather than its JSON."""
    # A refused sign-in is a 401 too: it says why (wrong password), not "sign in".
    if isinstance(exc, ServerError) and exc.status == 401 and exc.code != "invalid_credentials":
        return (
            "not signed in, or the session has ended: "
            f"run `fivestep device login {username or 'USERNAME'}` (edits made meanwhile stay queued)"
        )
    if isinstance(exc, ServerError) and exc.error:
        return f"the server refused ({exc.status} {exc.code}): {exc.error.get('message')}"
    if isinstance(exc, NetworkError):
        return f"no answer from the server ({exc})"
    return str(exc)


def _say_retrying(problem: Exception, delay: float) -> None:
    print(f"device: {_explained(problem)}; trying again in {delay:.1f} s", file=sys.stderr, flush=True)


def _server_marker(db: str) -> Path:
    return Path(db).with_suffix(".server")


def _remembered_server(args: argparse.Namespace) -> str:
    """The server of the last successful sign-in (login remembers it only then: a mistyped --server
    must not send the next sync elsewhere with the session of the right one)."""
    if args.action == "login" and args.server is not None:
        return str(args.server).strip()
    # The tablet's next user signs in to the server its last one used, without typing it again.
    marker = _server_marker(args.db)
    return marker.read_text().strip() if marker.exists() else DEFAULT_SERVER


def _act(device: Device, args: argparse.Namespace, server: str) -> int:
    if args.action == "login":
        password = args.password or os.environ.get("FIVESTEP_DEVICE_PASSWORD") or getpass.getpass()
        user = device.login(args.username, password)
        _server_marker(args.db).write_text(server)
        print(f"signed in to {server} as {user['username']} ({user['role']}); client {device.client_id}")
        if device.handed_over:
            print(f"handed over {device.handed_over} for a supervisor to re-enter or dismiss")
        if device.deleted:
            print(
                f"deleted {device.deleted}: the server took none of their answers, nor these files from you"
            )
    elif args.action == "sync":
        report = device.sync_with_retry(attempts=max(args.retries, 0), on_retry=_say_retrying)
        print(
            f"pushed {report.pushed}, pulled {report.pulled} changes, {report.confirmed} edits confirmed"
            + (f", {report.conflicts} conflicts for a supervisor" if report.conflicts else "")
            + (f", {len(report.refused)} edits refused" if report.refused else "")
            + (f", {report.resets} resets" if report.resets else "")
            + (f", {report.photos.sent} photos sent" if report.photos.sent else "")
            + (f", {len(report.photos.refused)} photos refused" if report.photos.refused else "")
            + (f", {len(report.photos.held)} photos held (answer rejected)" if report.photos.held else "")
            + (f", {report.photos.waiting} photos waiting" if report.photos.waiting else "")
        )
        for refused in report.refused:
            print(
                f"refused, kept for a supervisor: seq {refused.seq} {refused.op} {refused.record} ({refused.code})"
            )
        if report.held_back is not None:
            return _failed(f"{PushHeldBack(report.held_back)}: run `fivestep device sync` again later")
    elif args.action == "status":
        counts = dict(device.db.execute("SELECT entity, count(*) FROM confirmed GROUP BY entity").fetchall())
        print(
            json.dumps(
                {
                    "signed_in_as": device.username,
                    "server": server,
                    "client_id": device.client_id,
                    "cursor": device.cursor,
                    "records": counts,
                    "pending": len(device.pending()),
                    # With `pending`, what only this tablet holds: is it safe to hand it over?
                    "photos_to_send": sum(p["state"] == "waiting" for p in device.photo_queue()),
                },
                ensure_ascii=False,
                indent=2,
            )
        )
    elif args.action in ("households", "visits") and device.never_synced:
        # An empty list would look like an empty community; this tablet has simply not synced yet.
        return _failed(_never_synced(device))
    elif args.action == "households":
        for hid, h in sorted(device.view("household").items(), key=lambda kv: kv[1].get("registry_no", "")):
            print(
                f"{hid}  {h.get('registry_no')}  v{h.get('version')}  {h.get('status')}  {h.get('address')}"
            )
    elif args.action == "visits":
        _print_visits(device)
    elif args.action == "photo":
        return _attach_photo(device, args)
    elif args.action == "answer":
        if args.visit_id not in device.view("visit"):
            return _failed(f"no visit {args.visit_id} on this device (sync first?)")
        value = device.answer_value(args.visit_id, args.template, args.item, args.row)
        print("unanswered" if value is None else json.dumps(value, ensure_ascii=False, indent=2))
    elif args.action == "photos":
        for photo in device.photo_queue():
            print(
                f"{photo['sha256'][:16]}  {photo['filename']}  {photo['length']} bytes  {photo['state']}"
                + (f" ({photo['code']})" if photo["code"] else "")
                + (f"  server: {photo['server_state']}" if photo["server_state"] else "")
                + (f" ({photo['server_refusal']})" if photo["server_refusal"] else "")
            )
    else:
        try:
            changes = _household_changes(args.assignments)
        except ValueError as exc:
            return _failed(str(exc))
        if args.household_id not in device.view("household"):
            # An edit of a record the device does not show would only be quarantined for a supervisor.
            return _failed(f"no household {args.household_id} on this device (sync first?)")
        try:
            mutation = device.update_household(args.household_id, **changes)
        except UnsendableEdit as exc:
            return _failed(str(exc))
        print(f"queued {mutation['op']} seq {mutation['seq']}; run `fivestep device sync` to send it")
    return 0


def _never_synced(device: Device) -> str:
    if device.username is None:
        return "nothing on this device yet: run `fivestep device login USERNAME`, then `fivestep device sync`"
    return "nothing on this device yet: run `fivestep device sync`"


def _print_visits(device: Device) -> None:
    households = device.view("household")
    for vid, visit in sorted(device.view("visit").items(), key=lambda kv: str(kv[1].get("due_date"))):
        registry_no = households.get(str(visit.get("household_id")), {}).get("registry_no")
        print(
            f"{vid}  {registry_no}  {visit.get('purpose')}  {visit.get('status')}  due {visit.get('due_date')}"
        )


def _attach_photo(device: Device, args: argparse.Namespace) -> int:
    if not args.file.is_file():
        return _failed(f"no such file: {args.file}")
    if problem := device.photo_item_problem(args.visit_id, args.template, args.item):
        return _failed(problem)
    try:
        gps = _gps(args.gps) if args.gps else None
    except ValueError:
        return _failed("--gps takes LAT,LON or LAT,LON,ACCURACY_M (decimal degrees, metres)")
    mutation = device.attach_photo(
        args.visit_id, args.template, args.item, args.file, view=args.view, gps=gps, row_id=args.row
    )
    sha256 = mutation["observations"][0]["value"]["photos"][-1]["sha256"]
    print(
        f"queued photo {sha256[:16]} with {mutation['op']} seq {mutation['seq']}; `fivestep device sync` sends both"
    )
    return 0


def _gps(text: str) -> dict[str, Any]:
    parts = [float(part) for part in text.split(",")]
    if len(parts) not in (2, 3):
        raise ValueError(text)
    return {"lat": parts[0], "lon": parts[1], "accuracy_m": parts[2] if len(parts) == 3 else 10.0}


EDITABLE = tuple(name for name in HouseholdPatch.__struct_fields__ if name != "version")


def _household_changes(assignments: list[str]) -> dict[str, Any]:
    """The edits typed as FIELD=VALUE, checked as the server will check them: a mistyped field or a value
    it refuses would only be quarantined for a supervisor, and a bare FIELD used to clear the field."""
    changes = dict(_assignment(a) for a in assignments)
    try:
        msgspec.convert({**changes, "version": 0}, HouseholdPatch)
    except msgspec.ValidationError as exc:
        raise ValueError(f"not an edit of a household: {exc} (fields: {', '.join(EDITABLE)})") from None
    if "version" in changes:
        raise ValueError(f"the version is not edited (fields: {', '.join(EDITABLE)})")
    return changes


def _assignment(text: str) -> tuple[str, Any]:
    name, equals, raw = text.partition("=")
    if not equals or not name:
        raise ValueError(f"write each edit as FIELD=VALUE, e.g. address=解放街3号 (not {text!r})")
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw
