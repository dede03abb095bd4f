"""m8ctl stays a light client: no server-side library is loaded on its path."""

from __future__ import annotations

import subprocess
import sys

SERVER_SIDE = ("fastapi", "pymongo", "boto3", "hvac", "aio_pika", "uvicorn")


def test_m8ctl_never_imports_server_side_libraries() -> None:
    probe = (
        "import sys, m8.client.m8ctl, m8.client.upload, m8.client.sdk, m8.client.outcome; "
        f"print(','.join(m for m in {SERVER_SIDE!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_m8ctl_help_does_not_load_httpx_nacl_or_the_store_types() -> None:
    probe = (
        "import sys, m8.client.m8ctl; "
        "print(','.join(m for m in ('httpx', 'nacl', 'm8.stores', 'pydantic') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
