"""Real servers for development and tests: OpenBao, a MongoDB-wire server, moto, RabbitMQ."""

from m8.devservices.manager import ServiceError, ServiceInfo, Services, local_services

__all__ = ["ServiceError", "ServiceInfo", "Services", "local_services"]
