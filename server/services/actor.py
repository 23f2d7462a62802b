"""Who is calling, and what lies in their jurisdiction.

Scope rule (documented in docs/architecture.md): every user is bound to one node of the tree and sees
only what lies under it. A field worker is bound to a community, so sees that community's households:
the two-person team that visits a household comes from its community, and a worker must be able to
take over a colleague's visit without waiting for a reassignment to sync.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, select

from server.db.models import Household, Jurisdiction
from server.errors import Forbidden


@dataclass(frozen=True, slots=True)
class Actor:
    user_id: uuid.UUID
    username: str
    display_name: str
    role: str
    jurisdiction_id: uuid.UUID
    jurisdiction_path: str
    device_id: uuid.UUID | None = None
    token_id: uuid.UUID | None = None
    request_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def administers_everything(self) -> bool:
        """An admin of a top node (or the system): what serves every community (the checklists, the
        working calendar) is theirs to change, not a subdistrict's or a community's admin's."""
        return self.is_admin and self.jurisdiction_path.strip("/").count("/") == 0

    def require_administers_everything(self, what: str) -> None:
        """403 unless an admin of a top node: `what` serves every community."""
        if not self.is_admin:
            raise Forbidden(f"Only administrators change {what}.")
        if not self.administers_everything:
            raise Forbidden(
                f"Only an administrator of the top of the jurisdiction tree changes {what}: it serves every "
                "community.",
                code="beyond_jurisdiction",
            )


SYSTEM = Actor(
    user_id=uuid.UUID(int=0),
    username="system",
    display_name="system",
    role="admin",
    jurisdiction_id=uuid.UUID(int=0),
    jurisdiction_path="/",
)
"""The actor for the CLI and the demo seed; audit rows still name it."""


def under(actor: Actor) -> ColumnElement[bool]:
    """Jurisdictions under the actor's node (the node itself included)."""
    return under_path(actor.jurisdiction_path)


def under_path(path: str) -> ColumnElement[bool]:
    """Jurisdictions under the node at ``path`` (the node itself included)."""
    return Jurisdiction.path.startswith(path, autoescape=True)


def communities_in_scope(actor: Actor) -> ColumnElement[bool]:
    return Household.community_id.in_(select(Jurisdiction.id).where(under(actor)))
