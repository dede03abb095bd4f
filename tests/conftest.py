"""Shared fixtures: real servers, see tests/servers.py."""

from tests.servers import aws, broker, mongo, mongo_db_name, services, state_dir, vault

__all__ = ["aws", "broker", "mongo", "mongo_db_name", "services", "state_dir", "vault"]
