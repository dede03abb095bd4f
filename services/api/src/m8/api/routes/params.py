"""Parameters in URLs, checked by the same rules as request bodies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator

from m8.api.models import STORE_PATTERN, secret_path
from m8.api.patterns import PATH_PATTERN
from m8.domain.paths import MAX_PATH_LENGTH

StoreName = Annotated[str, Path(pattern=STORE_PATTERN)]
SecretPath = Annotated[
    str,
    # The pattern in the document only: the validator's messages say what is wrong in words.
    Path(max_length=MAX_PATH_LENGTH, json_schema_extra={"pattern": PATH_PATTERN}),
    AfterValidator(secret_path),
]
