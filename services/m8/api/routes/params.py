"""Parameters in URLs, checked by the same rules as request bodies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator

from m8.api.models import STORE_PATTERN, secret_path
from m8.domain.paths import MAX_PATH_LENGTH

StoreName = Annotated[str, Path(pattern=STORE_PATTERN)]
SecretPath = Annotated[str, Path(max_length=MAX_PATH_LENGTH), AfterValidator(secret_path)]
