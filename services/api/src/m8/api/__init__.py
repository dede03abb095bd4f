"""m8's HTTP API (DESIGN section 5): `create_app(settings)`, served by `m8 api`."""

from m8.api.app import create_app
from m8.api.settings import ApiSettings

__all__ = ["ApiSettings", "create_app"]
