"""The device's photo files: kept in its own folder under their SHA-256 and sent through tus on sync.

A photo's row (table `photos` of the device database) is written in the same local transaction as the
answer that names it, and records the seq of that answer's mutation: the file is sent only once the
server has taken the answer (a file whose answer was rejected is held, never sent unreferenced). A file
attached to several answers while it waits (the same picture for two visits or items) is sent once any of
them is taken, and held only when all were rejected: table `photo_answers` keeps their seqs.

States: `waiting` (to send), `stored` (the server holds it; the device's copy is gone), `refused` (the
server will never take it: `code` says why), `held` (its answer was rejected: `code` is the answer's),
`lost` (the device's copy is missing or damaged). Attaching the same file again puts a held or lost one
back to waiting. A held file is sent after all once the server expects it (a pull shows its photo record
`expected`: a supervisor kept an answer naming it), and when the tablet is handed over (`release_held`).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sync.errors import NotTheServers, ServerError
from sync.private_files import open_owner_only, owner_only_folder
from sync.tus_client import (
    CHUNK_SIZE,
    LocalFile,
    LocalFileDamaged,
    RawTransport,
    Refused,
    file_sha256,
    send_file,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
    sha256 TEXT PRIMARY KEY, length INTEGER NOT NULL, filename TEXT NOT NULL, content_type TEXT NOT NULL,
    seq INTEGER NOT NULL, url TEXT, state TEXT NOT NULL DEFAULT 'waiting', code TEXT);
CREATE TABLE IF NOT EXISTS photo_answers (
    sha256 TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (sha256, seq));
"""
# A 4xx the server will answer again to the same file (too large, bad metadata, ...): a refusal. Sign-in
# problems are the whole sync's; 408 and 429 pass.
_NOT_THE_FILES_FAULT = frozenset({401, 403, 408, 429})

Transaction = Callable[[], AbstractContextManager[sqlite3.Connection]]
Outcome = Callable[[int], tuple[str, str | None] | None]
"""seq -> (status, code) of the push result the device recorded for it, if any."""


@dataclass
class UploadReport:
    sent: int = 0
    """Photo files the server now holds (sent, or found already stored)."""
    refused: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    waiting: int = 0
    """Files left for a later sync (their answer not pushed yet, or the server busy)."""

    def then(self, later: UploadReport) -> UploadReport:
        """This report and a later round's of the same sync: what each did, and what is left after both."""
        return UploadReport(
            self.sent + later.sent, self.refused + later.refused, self.held + later.held, later.waiting
        )


class PhotoQueue:
    def __init__(self, db: sqlite3.Connection, folder: Path, transaction: Transaction) -> None:
        self.db, self.folder, self._tx = db, folder.resolve(), transaction
        self.db.executescript(SCHEMA)

    def keep(self, source: Path) -> LocalFile:
        """A durable copy of ``source`` in the device's folder (the user may clear the gallery before the
        tablet is back online), named by its SHA-256; an earlier partial or damaged copy is replaced."""
        local = LocalFile.of(source)
        kept = self.folder / local.sha256
        if not (kept.exists() and _same_file(kept, local)):
            owner_only_folder(self.folder)
            partial = kept.with_suffix(".part")
            with source.open("rb") as reading, open_owner_only(partial) as writing:
                while block := reading.read(CHUNK_SIZE):
                    writing.write(block)
                writing.flush()
                os.fsync(writing.fileno())
            os.replace(partial, kept)
            _fsync_folder(self.folder)
        return local._replace(path=kept)

    def add(self, local: LocalFile, seq: int) -> None:
        """Queue the kept file for the answer with ``seq``; the caller holds the local transaction."""
        before = self.db.execute("SELECT state FROM photos WHERE sha256 = ?", (local.sha256,)).fetchone()
        if before is None or before[0] != "waiting":  # the answers judged already decided nothing now
            self.db.execute("DELETE FROM photo_answers WHERE sha256 = ?", (local.sha256,))
        self.db.execute(
            "INSERT OR IGNORE INTO photo_answers (sha256, seq) VALUES (?, ?)", (local.sha256, seq)
        )
        self.db.execute(
            "INSERT INTO photos (sha256, length, filename, content_type, seq) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (sha256) DO UPDATE SET seq = excluded.seq, "
            "code = CASE WHEN state IN ('held', 'lost') THEN NULL ELSE code END, "
            "state = CASE WHEN state IN ('held', 'lost') THEN 'waiting' ELSE state END",
            (local.sha256, local.length, local.filename, local.content_type, seq),
        )
        (state,) = self.db.execute("SELECT state FROM photos WHERE sha256 = ?", (local.sha256,)).fetchone()
        if state == "stored":  # attached again: the server has it, the new copy is not needed
            local.path.unlink(missing_ok=True)

    def discard_if_unnamed(self, local: LocalFile) -> None:
        """Delete a kept copy whose answer was not queued, unless an earlier answer names the same file:
        nothing would ever send it, nor delete it (a photo inside someone's home)."""
        named = self.db.execute("SELECT 1 FROM photos WHERE sha256 = ?", (local.sha256,)).fetchone()
        if named is None:
            local.path.unlink(missing_ok=True)

    def answers_waited_on(self) -> set[int]:
        """The seqs of the answers naming a file still to send: the file goes only once one is known taken."""
        rows = self.db.execute(
            "SELECT seq FROM photos WHERE state = 'waiting' UNION "
            "SELECT a.seq FROM photo_answers a JOIN photos p USING (sha256) WHERE p.state = 'waiting'"
        )
        return {int(seq) for (seq,) in rows}

    def release_held(self) -> None:
        """Put the files held for their rejected answers back to waiting (a handover sends them for the
        supervisor who has those answers)."""
        with self._tx():
            self.db.execute("UPDATE photos SET state = 'waiting', code = NULL WHERE state = 'held'")

    def forget_all(self) -> list[Path]:
        """Forget every photo (another user signed in: none is waiting, or the sign-in was refused); the
        caller holds the local transaction and deletes the returned copies once it has committed."""
        kept = [self.folder / sha256 for (sha256,) in self.db.execute("SELECT sha256 FROM photos")]
        # And any copy no row names: one a process killed between keeping it and queueing its answer left.
        kept += list(self.folder.iterdir()) if self.folder.is_dir() else []
        self.db.execute("DELETE FROM photo_answers")
        self.db.execute("DELETE FROM photos")
        return kept

    def entries(self, server: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """Every photo file with its state here and, once a pull brought it, the server's record's state and,
        when refused there, why (``server``: the confirmed photo records by SHA-256)."""
        rows = self.db.execute("SELECT sha256, filename, length, state, code FROM photos ORDER BY rowid")
        return [
            {
                "sha256": sha256,
                "filename": filename,
                "length": length,
                "state": state,
                "code": code,
                "server_state": server.get(sha256, {}).get("state"),
                "server_refusal": server.get(sha256, {}).get("refusal"),
            }
            for sha256, filename, length, state, code in rows
        ]

    def send(
        self,
        transport: RawTransport,
        token: str,
        outcome_of: Outcome,
        *,
        chunk_size: int = CHUNK_SIZE,
        expected: Collection[str] = (),
    ) -> UploadReport:
        """Send the waiting files whose answers the server took, and the held ones it ``expected`` (their
        SHA-256s: an answer naming them was taken after all). A lost request or answer propagates
        (NetworkError: sync again, each file resumes); a busy server leaves the rest for the next sync."""
        report = UploadReport()
        waiting = list(self._waiting(expected))
        for index, (local, url, seqs) in enumerate(waiting):
            outcome = ("expected", None) if local.sha256 in expected else _deciding(outcome_of, seqs)
            if outcome is None:  # the answer has not reached the server yet
                report.waiting += 1
                continue
            if outcome[0] == "rejected":
                self._end(local, "held", outcome[1])
                report.held.append(local.sha256)
                continue
            try:
                send_file(transport, token, local, url, self._url_keeper(local.sha256), chunk_size=chunk_size)
            except Refused as exc:
                self._end(local, "refused", exc.code)
                report.refused.append(local.sha256)
                continue
            except LocalFileDamaged as exc:
                self._end(local, "lost", exc.code)
                continue
            except NotTheServers:
                # Something on the way answers for the server (a proxy's page): no photo passes it now, and
                # the pull may still; the files wait for the next sync.
                report.waiting += len(waiting) - index
                return report
            except ServerError as exc:
                if 400 <= exc.status < 500 and exc.status not in _NOT_THE_FILES_FAULT:
                    self._end(local, "refused", _code(exc))
                    report.refused.append(local.sha256)
                    continue
                report.waiting += len(waiting) - index  # 5xx, 429: the server cannot take photos now
                return report
            self._end(local, "stored", None)
            report.sent += 1
        self._sweep_stored()
        return report

    def held_among(self, expected: Collection[str]) -> bool:
        """Whether a file held here is among the photos the server now ``expected``."""
        query = "SELECT 1 FROM photos WHERE state = 'held' AND sha256 IN (SELECT value FROM json_each(?))"
        return self.db.execute(query, (json.dumps(sorted(expected)),)).fetchone() is not None

    def _waiting(self, expected: Collection[str]) -> Iterator[tuple[LocalFile, str | None, list[int]]]:
        """Each waiting file, and each held one the server ``expected``, its upload URL and the seqs of the
        answers naming it (``photos.seq``, the latest, also for a queue from before `photo_answers`)."""
        rows = self.db.execute(
            "SELECT sha256, length, filename, content_type, url, seq FROM photos WHERE state = 'waiting' "
            "OR (state = 'held' AND sha256 IN (SELECT value FROM json_each(?))) ORDER BY rowid",
            (json.dumps(sorted(expected)),),
        ).fetchall()
        for sha256, length, filename, content_type, url, seq in rows:
            named = self.db.execute("SELECT seq FROM photo_answers WHERE sha256 = ?", (sha256,))
            seqs = sorted({seq, *(s for (s,) in named)})
            yield LocalFile(self.folder / sha256, sha256, length, filename, content_type), url, seqs

    def _url_keeper(self, sha256: str) -> Callable[[str | None], None]:
        def keep(url: str | None) -> None:
            with self._tx():
                self.db.execute("UPDATE photos SET url = ? WHERE sha256 = ?", (url, sha256))

        return keep

    def _end(self, local: LocalFile, state: str, code: str | None) -> None:
        with self._tx():
            self.db.execute(
                "UPDATE photos SET state = ?, code = ?, url = NULL WHERE sha256 = ?",
                (state, code, local.sha256),
            )
        if state == "stored":
            local.path.unlink(missing_ok=True)  # the server holds the original now

    def _sweep_stored(self) -> None:
        """Copies of stored photos a crash left between marking them stored and deleting them. It walks the
        folder, which holds only files still to send, not the device's whole photo history."""
        if not self.folder.is_dir():
            return
        for kept in self.folder.iterdir():
            row = self.db.execute("SELECT state FROM photos WHERE sha256 = ?", (kept.name,)).fetchone()
            if row is not None and row[0] == "stored":
                kept.unlink(missing_ok=True)


def _deciding(outcome_of: Outcome, seqs: list[int]) -> tuple[str, str | None] | None:
    """What the answers naming a file (``seqs``, oldest first) decide: send it once any was taken; wait
    while one is not pushed yet; hold it, with the latest's code, once every one was rejected."""
    outcomes = [outcome_of(seq) for seq in seqs]
    taken = [o for o in outcomes if o is not None and o[0] != "rejected"]
    if taken:
        return taken[0]
    if None in outcomes:
        return None
    return outcomes[-1]


def _code(exc: ServerError) -> str:
    return exc.code or f"http_{exc.status}"


def _same_file(kept: Path, local: LocalFile) -> bool:
    """The copy is still the file: a copy of the right length can have gone bad in place (the server
    found another SHA-256 and it was marked lost). Read only when the photo is taken again."""
    return kept.stat().st_size == local.length and file_sha256(kept) == local.sha256


def _fsync_folder(folder: Path) -> None:
    """The rename that makes a kept file appear must itself survive a power loss."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
