"""The repository lives in m8.eventsourcing (it needs no driver); this keeps the old name."""

from m8.eventsourcing.repository import Repository, Transaction

__all__ = ["Repository", "Transaction"]
