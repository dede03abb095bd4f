"""m8's container images built on this machine with podman, no Docker engine or registry.

The base is made from Debian's own packages (debootstrap) and imported once as
`m8-base:bookworm`; each service's image (the Dockerfile's targets) is built on it from
the working tree, its layers reused while nothing they hold changed.

    python -m m8.devservices.images      # base if missing, then m8-api, m8-keyrotator, m8-reactors
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from m8.devservices.manager import ServiceError

BASE_IMAGE = "m8-base:bookworm"
TARGETS = ("api", "keyrotator", "reactors")
INSTALL_HINT = "apt-get install -y podman runc debootstrap"
# The host's CA bundle: builds behind a TLS-intercepting proxy need it (pip and uv in the
# build stage trust it only through build arguments; it is in no image).
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# podman runs its children with at most this many processes per user (seen here): runc
# cannot give a container more without CAP_SYS_RESOURCE.
_NPROC_CEILING = 32768


def image(target: str) -> str:
    """The tag of a service's image: `m8-api:local`, as deploy/compose.yaml expects."""
    return f"m8-{target}:local"


def podman() -> list[str]:
    """The podman command with runc (crun refuses this kernel's cgroup mode), or an error
    that says what to install."""
    found = shutil.which("podman")
    if found is None or shutil.which("runc") is None:
        raise ServiceError(f"m8's images need podman and runc: {INSTALL_HINT}")
    return [found, "--runtime", "runc"]


def limits() -> list[str]:
    """`--ulimit` options a container may have here: podman's defaults (1048576 open files,
    more processes than podman itself may have) need CAP_SYS_RESOURCE, which a container
    host in a sandbox lacks."""
    options = []
    for name, which, ceiling in (
        ("nofile", resource.RLIMIT_NOFILE, None),
        ("nproc", resource.RLIMIT_NPROC, _NPROC_CEILING),
    ):
        hard = resource.getrlimit(which)[1]
        if hard == resource.RLIM_INFINITY:
            hard = ceiling or 1048576
        value = min(hard, ceiling) if ceiling else hard
        options += ["--ulimit", f"{name}={value}:{value}"]
    return options


def _run(argv: list[str], what: str, timeout: float, stdin: IO[bytes] | None = None) -> None:
    """Runs a step of a build; on failure, an error with the end of its output."""
    done = subprocess.run(
        argv, stdin=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        tail = "\n  ".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise ServiceError(f"{what} failed (exit {done.returncode}):\n  {tail}")


def image_exists(name: str) -> bool:
    """Whether the local image store holds `name`."""
    return subprocess.run([*podman(), "image", "exists", name], check=False).returncode == 0


def ensure_base() -> bool:
    """Makes `m8-base:bookworm` from Debian bookworm (python3, venv) unless it exists;
    whether it had to be made."""
    if image_exists(BASE_IMAGE):
        return False
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ServiceError(
            f"{BASE_IMAGE} is missing and debootstrap is not installed: {INSTALL_HINT}"
        )
    with tempfile.TemporaryDirectory(prefix="m8-base-") as tmp:
        root = Path(tmp) / "root"
        _run(
            [
                debootstrap, "--variant=minbase",
                "--include=python3,python3-venv,python-is-python3", "bookworm", str(root),
            ],
            "debootstrap of Debian bookworm",
            timeout=1200,
        )  # fmt: skip
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        try:
            command = [*podman(), "import", "-", BASE_IMAGE]
            _run(command, f"podman import {BASE_IMAGE}", 600, stdin=tar.stdout)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait()
    return True


def build(target: str, context: Path) -> str:
    """Builds a service's image from the tree at `context`; its tag."""
    tls: list[str] = []
    if CA_BUNDLE.exists():
        bundle = str(CA_BUNDLE)
        tls = [
            "-v", f"{CA_BUNDLE.parent}:{CA_BUNDLE.parent}:ro",
            "--build-arg", f"PIP_CERT={bundle}",
            "--build-arg", f"SSL_CERT_FILE={bundle}",
            "--build-arg", "UV_NATIVE_TLS=1",
        ]  # fmt: skip
    argv = [
        *podman(), "build", "--network=host", *limits(), *tls,
        "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}",
        "--target", target, "-t", image(target), str(context),
    ]  # fmt: skip
    _run(argv, f"podman build --target {target}", timeout=1200)
    return image(target)


def build_all(context: Path) -> dict[str, float]:
    """The base (if missing) and every service's image; seconds each took."""
    took: dict[str, float] = {}
    started = time.monotonic()
    if ensure_base():
        took[BASE_IMAGE] = time.monotonic() - started
    for target in TARGETS:
        started = time.monotonic()
        build(target, context)
        took[image(target)] = time.monotonic() - started
    return took


def repository_root() -> Path:
    """The working tree this module was installed from (editable installs only)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "Dockerfile").exists() and (parent / "uv.lock").exists():
            return parent
    raise ServiceError("no Dockerfile above this module: run from m8's working tree")


def main() -> None:
    """Builds the images and prints how long each took."""
    try:
        for name, seconds in build_all(repository_root()).items():
            print(f"{name}: {seconds:.1f} s")
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
