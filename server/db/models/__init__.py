"""Every table, imported here so that metadata (and Alembic) sees them all."""

from server.db.models.audit import AuditEvent
from server.db.models.base import Base
from server.db.models.households import Household, HouseholdStatus, Member
from server.db.models.jurisdictions import CHILD_LEVEL, Jurisdiction, Level
from server.db.models.people import AuthToken, Device, LoginThrottle, Role, User

__all__ = [
    "CHILD_LEVEL",
    "AuditEvent",
    "AuthToken",
    "Base",
    "Device",
    "Household",
    "HouseholdStatus",
    "Jurisdiction",
    "Level",
    "LoginThrottle",
    "Member",
    "Role",
    "User",
]
