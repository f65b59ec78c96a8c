"""Errors raised by the SQL store. The API maps ConflictError -> 409 and NotFoundError -> 404."""

from __future__ import annotations


class StoreError(RuntimeError):
    """Base class of every error the store raises on purpose; its message is complete on its own."""


class DatabaseUnavailable(StoreError):
    """The database cannot be reached (closed port, wrong host, unreadable SQLite file)."""


class ConflictError(StoreError):
    """The request conflicts with the current state (already decided, expired, concurrent promotion)."""


class DatabaseBusy(ConflictError):
    """A concurrent writer held the lock too long (SQLite busy timeout, PostgreSQL deadlock); retryable."""


class NotFoundError(StoreError, LookupError):
    """A requested row does not exist."""


class ExperimentContractConflict(ConflictError):
    """An experiment name+version is already recorded with different content (contracts are immutable)."""

    def __init__(self, name: str, version: str, field: str, stored: str, new: str) -> None:
        self.name, self.version, self.field, self.stored, self.new = name, version, field, stored, new
        super().__init__(
            f"experiment {name!r} version {version!r} is already recorded with {field} {stored[:12]}…, "
            f"the new content has {new[:12]}…; experiment contracts are immutable: bump `version` "
            f"in config/experiments/{name}.yaml to change it"
        )


class OverrideNoteRequired(StoreError, ValueError):
    """Approving a proposal the rules recommended to REJECT needs a written justification."""


class ModelNotServable(ConflictError):
    """The model failed ONNX parity (servable = false) and cannot become production."""


class RegistryChanged(ConflictError):
    """An optimistic precondition failed: the registry moved since the caller looked (HTTP 409)."""
