"""m8's images, built from this tree with podman, and the system run from them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from m8.devservices import ServiceError, Services
from m8.devservices.images import build_all, podman
from m8.devservices.system import m8ctl_login
from tests.e2e.conftest import RunningSystem
from tests.servers import unique, virtual_host
from tests.support import images, kube

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built() -> dict[str, float]:
    """The base image (made once, then kept by podman) and each service's image, built
    from the working tree; seconds each took. No podman fails the test: it is required."""
    try:
        podman()
        took = build_all(ROOT)
    except ServiceError as exc:
        failure = str(exc)
    else:
        failure = ""
    if failure:
        pytest.fail(failure, pytrace=False)
    print("image builds: " + ", ".join(f"{name} {s:.1f} s" for name, s in took.items()))
    return took


@pytest.fixture(scope="module")
def containers(
    built: dict[str, float], services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSystem]:
    """The four services as containers, in a virtual host and database of their own, and
    an m8ctl profile logged in to them as the dev admin."""
    workdir = tmp_path_factory.mktemp("containers")
    database = unique("m8_containers_")
    with virtual_host(services) as vhost:
        started = time.monotonic()
        overrides = {"M8_MONGODB_DATABASE": database, "M8_AMQP_URL": vhost.url}
        try:
            running = images.start(services, workdir, overrides)
        except ServiceError as exc:
            failure = str(exc)
        else:
            failure = ""
        if failure:
            pytest.fail(failure, pytrace=False)
        print(f"containers ready in {time.monotonic() - started:.1f} s")
        try:
            config = workdir / "m8ctl.json"
            m8ctl_login(running.system, config)
            yield RunningSystem(running.system, services, config, database)
        finally:
            running.stop()


@pytest.fixture(scope="module")
def played(
    built: dict[str, float],
    services: Services,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[RunningSystem, kube.PlayedSystem]]:
    """deploy/k8s's Deployments played by `podman kube play` (tests/support/kube.py says
    what is adapted to this machine), in a virtual host and database of their own, and an
    m8ctl profile logged in to them as the dev admin. The pods' logs are printed if a test
    using them failed."""
    workdir = tmp_path_factory.mktemp("kube")
    database = unique("m8_kube_")
    with virtual_host(services) as vhost:
        started = time.monotonic()
        overrides = {"M8_MONGODB_DATABASE": database, "M8_AMQP_URL": vhost.url}
        try:
            running = kube.play(services, workdir, overrides)
        except ServiceError as exc:
            failure = str(exc)
        else:
            failure = ""
        if failure:
            pytest.fail(failure, pytrace=False)
        print(
            f"pods ready in {time.monotonic() - started:.1f} s"
            f" (podman kube play {running.play_seconds:.1f} s)"
        )
        failed = request.session.testsfailed
        try:
            config = workdir / "m8ctl.json"
            m8ctl_login(running.system, config)
            yield RunningSystem(running.system, services, config, database), running
        finally:
            if request.session.testsfailed > failed:
                print(f"the pods' logs:{running.logs()}")
            running.stop()
