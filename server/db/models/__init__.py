"""Every table, imported here so that metadata (and Alembic) sees them all."""

from server.db.models.audit import AuditEvent
from server.db.models.base import Base
from server.db.models.checklists import ChecklistTemplate, TemplateStatus
from server.db.models.households import Household, HouseholdStatus, Member
from server.db.models.jurisdictions import CHILD_LEVEL, Jurisdiction, Level
from server.db.models.people import AuthToken, Device, LoginThrottle, Role, User
from server.db.models.photos import Photo, PhotoRef, PhotoRefusal, Upload, UploadState
from server.db.models.sync import (
    MutationLog,
    RecordVersion,
    ScopeExit,
    SyncChange,
    SyncClient,
    SyncConflict,
    SyncNumbering,
    SyncState,
)
from server.db.models.visits import (
    EDITABLE,
    HolidayOverride,
    Observation,
    Visit,
    VisitStatus,
    VisitTeamMember,
    VisitTransition,
)

__all__ = [
    "CHILD_LEVEL",
    "EDITABLE",
    "AuditEvent",
    "AuthToken",
    "Base",
    "ChecklistTemplate",
    "Device",
    "HolidayOverride",
    "Household",
    "HouseholdStatus",
    "Jurisdiction",
    "Level",
    "LoginThrottle",
    "Member",
    "MutationLog",
    "Observation",
    "Photo",
    "PhotoRef",
    "PhotoRefusal",
    "RecordVersion",
    "Role",
    "ScopeExit",
    "SyncChange",
    "SyncClient",
    "SyncConflict",
    "SyncNumbering",
    "SyncState",
    "TemplateStatus",
    "Upload",
    "UploadState",
    "User",
    "Visit",
    "VisitStatus",
    "VisitTeamMember",
    "VisitTransition",
]
