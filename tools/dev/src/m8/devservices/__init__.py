"""Real servers for development and tests: RabbitMQ, a MongoDB-wire server, and the local
server of each store type (OpenBao, moto: m8.stores, DevServer)."""

from m8.devservices.manager import ServiceError, ServiceInfo, Services, local_services

__all__ = ["ServiceError", "ServiceInfo", "Services", "local_services"]
