"""Structured JSON logging, set up once per process, that refuses secret-looking fields."""

from __future__ import annotations

import logging
import re
import sys

from pythonjsonlogger.json import JsonFormatter

# A field whose name matches this never reaches a log line: whoever logs a value by
# mistake gets "[refused]" in its place, and the name of the field in `refused_fields`.
SECRET_FIELD = re.compile(
    r"(^|_)(value|values|plaintext|secret_value|password|passwd|token|private_key|privkey|"
    r"seed|ciphertext|credential|credentials|api_key|fp_key|secret_id)(_|$)",
    re.IGNORECASE,
)
REFUSED = "[refused]"

# Attributes every LogRecord has; anything else came in through `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class RefuseSecretFields(logging.Filter):
    """Blanks every `extra` field whose name looks like it holds a secret value."""

    def filter(self, record: logging.LogRecord) -> bool:
        refused = [
            name for name in vars(record) if name not in _RECORD_ATTRS and SECRET_FIELD.search(name)
        ]
        for name in refused:
            setattr(record, name, REFUSED)
        # uvicorn adds a copy of the message with terminal colour codes: noise in JSON.
        record.__dict__.pop("color_message", None)
        if refused:
            record.refused_fields = sorted(refused)
        return True


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Sends every log record to stderr as one JSON object per line (or plain text)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RefuseSecretFields())
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
            timestamp=False,
        )
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Third-party loggers that would otherwise print request details at INFO.
    for noisy in ("aio_pika", "aiormq", "pymongo", "botocore", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
