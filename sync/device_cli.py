"""`fivestep device ...`: the reference client from a shell, for newcomers and for field debugging.

fivestep device login --server http://127.0.0.1:8000 demo-worker-1     (password: demo)
fivestep device sync
fivestep device status
fivestep device households
fivestep device edit HOUSEHOLD_ID address="解放街1号" recheck_class=B
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
from pathlib import Path
from typing import Any

import httpx

from sync.client import Device, NetworkError, ServerError, httpx_transport

DEFAULT_DB = "./var/device.sqlite"


def add_commands(commands: Any) -> None:
    device = commands.add_parser("device", help="the reference offline device client")
    device.add_argument(
        "--db", default=DEFAULT_DB, help=f"the device's local database (default {DEFAULT_DB})"
    )
    actions = device.add_subparsers(dest="action", required=True)
    login = actions.add_parser("login", help="sign in and remember the server")
    login.add_argument("username")
    login.add_argument("--server", default="http://127.0.0.1:8000")
    login.add_argument("--password", default=None, help="default: FIVESTEP_DEVICE_PASSWORD, else asked for")
    actions.add_parser("sync", help="push pending edits, then pull (retries with backoff)")
    actions.add_parser("status", help="client id, cursor, records held, pending edits")
    actions.add_parser("households", help="households as this device sees them (pending edits applied)")
    edit = actions.add_parser("edit", help="queue a household edit: FIELD=VALUE ... (values as JSON or text)")
    edit.add_argument("household_id")
    edit.add_argument("assignments", nargs="+")


def run(args: argparse.Namespace) -> int:
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    server = _remembered_server(args)
    with httpx.Client(base_url=server, timeout=30) as http:
        device = Device(args.db, httpx_transport(http))
        try:
            return _act(device, args, server)
        except (NetworkError, ServerError) as exc:
            print(f"device: {exc}")
            return 1
        finally:
            device.close()


def _remembered_server(args: argparse.Namespace) -> str:
    marker = Path(args.db).with_suffix(".server")
    if args.action == "login":
        marker.write_text(args.server)
        return str(args.server)
    return marker.read_text().strip() if marker.exists() else "http://127.0.0.1:8000"


def _act(device: Device, args: argparse.Namespace, server: str) -> int:
    if args.action == "login":
        password = args.password or os.environ.get("FIVESTEP_DEVICE_PASSWORD") or getpass.getpass()
        user = device.login(args.username, password)
        print(f"signed in to {server} as {user['username']} ({user['role']}); client {device.client_id}")
    elif args.action == "sync":
        report = device.sync_with_retry()
        print(
            f"pushed {report.pushed}, pulled {report.pulled} changes, {report.confirmed} edits confirmed"
            + (f", {report.conflicts} conflicts for a supervisor" if report.conflicts else "")
            + (f", rejected seqs {report.rejected}" if report.rejected else "")
            + (f", {report.resets} resets" if report.resets else "")
        )
    elif args.action == "status":
        counts = dict(device.db.execute("SELECT entity, count(*) FROM confirmed GROUP BY entity").fetchall())
        print(
            json.dumps(
                {
                    "client_id": device.client_id,
                    "cursor": device.cursor,
                    "records": counts,
                    "pending": len(device.pending()),
                },
                ensure_ascii=False,
                indent=2,
            )
        )
    elif args.action == "households":
        for hid, h in sorted(device.view("household").items(), key=lambda kv: kv[1].get("registry_no", "")):
            print(
                f"{hid}  {h.get('registry_no')}  v{h.get('version')}  {h.get('status')}  {h.get('address')}"
            )
    else:
        changes = dict(_assignment(a) for a in args.assignments)
        mutation = device.update_household(args.household_id, **changes)
        print(f"queued {mutation['op']} seq {mutation['seq']}; run `fivestep device sync` to send it")
    return 0


def _assignment(text: str) -> tuple[str, Any]:
    name, _, raw = text.partition("=")
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw
