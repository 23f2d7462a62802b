"""The device sync protocol: pull changes by cursor, push numbered mutations (docs/sync-protocol.md)."""

from __future__ import annotations

from litestar import Controller, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import JSONBody, RawBody

from schemas.sync import HandoverRequest, PullRequest, PullResponse, PushRequest, PushResponse
from server.dependencies import CurrentActor, DbSession, Rules, provide_actor, provide_rules
from server.services import sync_pull, sync_push


def document_handover_body(data: HandoverRequest) -> None:
    """Never resolved, as document_push_body: a handover's body is a push's, and who its author was."""


def document_push_body(data: PushRequest) -> None:
    """Never resolved (the handler does not ask for it): it tells the OpenAPI document what a push body
    is. The handler decodes the body itself, mutation by mutation, so that one malformed mutation is
    quarantined instead of refusing the batch (server/services/sync_push.py)."""


class SyncController(Controller):
    path = "/api/v1/sync"
    tags = ["sync"]
    dependencies = {"actor": Provide(provide_actor), "rules": Provide(provide_rules, sync_to_thread=False)}

    @post(
        "/pull", status_code=200, summary="Changes in your scope after your cursor", opt={"read_only": True}
    )
    async def pull(
        self, state: State, db_session: DbSession, actor: CurrentActor, data: JSONBody[PullRequest]
    ) -> PullResponse:
        await db_session.rollback()  # authentication is done; the pull reads in a snapshot of its own
        return await sync_pull.pull(state.db, actor, data)

    @post(
        "/push",
        status_code=200,
        summary="Apply your queued mutations, exactly once, in order",
        dependencies={"documented_body": Provide(document_push_body, sync_to_thread=False)},
    )
    async def push(
        self, db_session: DbSession, actor: CurrentActor, rules: Rules, body: RawBody
    ) -> PushResponse:
        # `body` is Litestar's raw request body, read before any dependency (so before the sign-in's first
        # statement: SQLite's write lock is never held while a body arrives).
        envelope, mutations = sync_push.decode(body)
        return await sync_push.push(db_session, actor, envelope, mutations, rules)

    @post(
        "/handover",
        status_code=200,
        summary="Hand in the queue a deactivated user left on this tablet, for a supervisor",
        dependencies={"documented_body": Provide(document_handover_body, sync_to_thread=False)},
    )
    async def handover(self, db_session: DbSession, actor: CurrentActor, body: RawBody) -> PushResponse:
        # A push's body, decoded as a push's is: the queue is sent as it was, client id and seqs included.
        envelope, mutations = sync_push.decode_handover(body)
        return await sync_push.hand_over(db_session, actor, envelope, mutations)
