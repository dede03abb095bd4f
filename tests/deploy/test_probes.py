"""Every m8 service in deploy/k8s and deploy/compose.yaml is probed where it answers: the
reactors and the key rotator on their metrics port (m8.health), which their settings open
on the port the manifests name, and which monitoring may reach."""

from __future__ import annotations

from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from tests.deploy.kustomize import DEPLOY, Resource, named, pod_spec, render, selects

# The services that serve /healthz and /readyz on their metrics port, and the variable
# that opens it.
OPERATIONS_PORT = {
    "keyrotator": "M8_KEYROTATOR_METRICS_PORT",
    "reactor-vault": "M8_REACTOR_METRICS_PORT",
    "reactor-aws": "M8_REACTOR_METRICS_PORT",
}


@pytest.fixture(scope="module")
def m8() -> list[Resource]:
    return render(DEPLOY / "k8s")


def _container(resources: list[Resource], component: str) -> Resource:
    deployment = named(resources, "Deployment")[f"m8-{component}"]
    [container] = pod_spec(deployment)["containers"]
    found: Resource = container
    return found


def _env(container: Resource) -> dict[str, Any]:
    return {variable["name"]: variable.get("value") for variable in container.get("env", [])}


@pytest.mark.parametrize("component", sorted(OPERATIONS_PORT))
def test_the_service_is_probed_on_the_metrics_port_it_opens(
    m8: list[Resource], component: str
) -> None:
    container = _container(m8, component)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = _env(container)

    assert env[OPERATIONS_PORT[component]] == str(ports["metrics"])
    # Reachable from the kubelet and Prometheus, not only from inside the pod.
    assert env[OPERATIONS_PORT[component].replace("_PORT", "_HOST")] == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    # Alive is not ready: an outage of MongoDB or RabbitMQ must not restart every pod.
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("component", sorted(OPERATIONS_PORT))
def test_monitoring_may_reach_the_metrics_port(m8: list[Resource], component: str) -> None:
    labels = named(m8, "Deployment")[f"m8-{component}"]["spec"]["template"]["metadata"]["labels"]
    port = {p["name"]: p["containerPort"] for p in _container(m8, component)["ports"]}["metrics"]
    admitted = [
        rule
        for policy in named(m8, "NetworkPolicy").values()
        if selects(policy["spec"]["podSelector"], labels)
        for rule in policy["spec"].get("ingress", [])
        if any(p["port"] == port for p in rule["ports"])
    ]
    assert admitted
    for rule in admitted:
        [source] = rule["from"]
        assert source["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "monitoring"
        }


def test_compose_checks_the_health_of_every_m8_service() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    for name in ("api", "keyrotator", "reactor-vault", "reactor-aws"):
        command = " ".join(compose[name]["healthcheck"]["test"])
        assert "/readyz" in command, name
    for name in OPERATIONS_PORT:
        port = compose[name]["environment"][OPERATIONS_PORT[name]]
        assert f"127.0.0.1:{port}/readyz" in " ".join(compose[name]["healthcheck"]["test"])
