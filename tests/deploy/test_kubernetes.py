"""deploy/k8s (m8's services) and deploy/k8s/backing (RabbitMQ and MongoDB), as kustomize
renders them: valid for a fixed Kubernetes version (kubernetes-validate, strict: unknown
fields are errors), custom resources valid for their operators' CRD schemas
(deploy/k8s/crds), and what deploy/README.md and docs/security.md promise of them."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from m8.messaging.permissions import services
from m8.messaging.topology import RPC_KEYROTATOR_QUEUE
from tests.deploy.kustomize import (
    DEPLOY,
    Resource,
    containers,
    named,
    pod_spec,
    render,
    selects,
)

# The oldest Kubernetes the manifests are checked for (kubernetes-validate's schemas of
# that minor version). Raise it when the oldest supported cluster is newer.
KUBERNETES_VERSION = "1.31.0"

M8_COMPONENTS = ("api", "keyrotator", "reactor-vault", "reactor-aws")
REACTORS = ("reactor-vault", "reactor-aws")
# Every port a store may be reached on (HTTPS: AWS, a Vault behind TLS; Vault's own).
UPSTREAM_PORTS = {("TCP", 443), ("TCP", 8200)}
BACKING_PORTS = {("TCP", 5671), ("TCP", 5672), ("TCP", 27017)}
DNS_PORTS = {("UDP", 53), ("TCP", 53)}

# Which Secret each service gets (deploy/README.md, "Which secret goes to which
# service"): as volumes, and as single keys of m8-connections (its own URLs only).
SECRET_VOLUMES = {
    "api": {"m8-api-tokens"},
    "keyrotator": {"m8-keyrotator-master-key", "m8-kek-public"},
    "reactor-vault": {"m8-reactor-vault", "m8-fingerprint-key"},
    "reactor-aws": {"m8-reactor-aws", "m8-fingerprint-key"},
}


@pytest.fixture(scope="module")
def m8() -> list[Resource]:
    return render(DEPLOY / "k8s")


@pytest.fixture(scope="module")
def backing() -> list[Resource]:
    return render(DEPLOY / "k8s" / "backing")


@pytest.fixture(scope="module")
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> JSON schema, from the CRDs kept in deploy/k8s/crds."""
    schemas = {}
    for path in sorted((DEPLOY / "k8s" / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = _json_schema(version["schema"]["openAPIV3Schema"])
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def _json_schema(node: Any) -> Any:
    """A CRD's structural OpenAPI v3 schema as a JSON schema with the API server's rules:
    an object with `properties` admits no other field (unless it preserves unknown
    fields), and `x-kubernetes-int-or-string` admits an integer or a string."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {key: _json_schema(value) for key, value in node.items()}
    if schema.pop("x-kubernetes-int-or-string", False):
        schema["type"] = ["integer", "string"]
    preserve = schema.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in schema and "additionalProperties" not in schema and not preserve:
        schema["additionalProperties"] = False
    schema.pop("format", None)  # int32/int64 and the like: not JSON schema formats
    return schema


def _validation_errors(
    resources: list[Resource], crd_schemas: dict[tuple[str, str], dict[str, Any]]
) -> Iterator[str]:
    for resource in resources:
        name = f"{resource['kind']}/{resource['metadata']['name']}"
        custom = crd_schemas.get((resource["apiVersion"], resource["kind"]))
        if custom is not None:
            for error in jsonschema.Draft202012Validator(custom).iter_errors(resource):
                yield f"{name} {'/'.join(map(str, error.absolute_path))}: {error.message}"
            continue
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            yield f"{name} {'/'.join(map(str, error.absolute_path))}: {error.message}"
        except kubernetes_validate.SchemaNotFoundError as error:
            yield f"{name}: {error.message} (and no CRD schema in deploy/k8s/crds)"


def _workloads(resources: list[Resource]) -> dict[str, Resource]:
    return {
        r["metadata"]["name"]: r for r in resources if r["kind"] in ("Deployment", "StatefulSet")
    }


def _deployment(resources: list[Resource], component: str) -> Resource:
    return named(resources, "Deployment")[f"m8-{component}"]


# ---- schemas ------------------------------------------------------------------------------


def test_m8_manifests_are_valid_kubernetes_objects(
    m8: list[Resource], crd_schemas: dict[tuple[str, str], dict[str, Any]]
) -> None:
    assert {r["kind"] for r in m8} >= {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "HorizontalPodAutoscaler",
    }
    assert list(_validation_errors(m8, crd_schemas)) == []


def test_backing_manifests_are_valid_with_the_operators_crds(
    backing: list[Resource], crd_schemas: dict[tuple[str, str], dict[str, Any]]
) -> None:
    assert "RabbitmqCluster" in {r["kind"] for r in backing}
    assert list(_validation_errors(backing, crd_schemas)) == []


def test_validation_rejects_unknown_fields_and_bad_values(
    m8: list[Resource],
    backing: list[Resource],
    crd_schemas: dict[tuple[str, str], dict[str, Any]],
) -> None:
    # The two checks above can fail: a misspelt field of a Deployment's container, and a
    # RabbitmqCluster with a negative replica count and a field its operator lacks.
    deployment = copy.deepcopy(_deployment(m8, "api"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    cluster = copy.deepcopy(named(backing, "RabbitmqCluster")["m8-rabbitmq"])
    cluster["spec"]["replicas"] = -1
    cluster["spec"]["quorum"] = True
    errors = list(_validation_errors([deployment, cluster], crd_schemas))
    assert any("readinesProbe" in error for error in errors), errors
    assert any("replicas" in error for error in errors), errors
    assert any("quorum" in error for error in errors), errors


def test_no_secret_is_part_of_the_kustomizations(
    m8: list[Resource], backing: list[Resource]
) -> None:
    # Keys, tokens and passwords come from the operator's secret manager, never from Git.
    assert [r["metadata"]["name"] for r in [*m8, *backing] if r["kind"] == "Secret"] == []


# ---- pods ---------------------------------------------------------------------------------


def test_the_api_is_ready_on_readyz_and_alive_on_healthz(m8: list[Resource]) -> None:
    (api,) = pod_spec(_deployment(m8, "api"))["containers"]
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in api["ports"]


def test_every_container_has_cpu_and_memory_requests_and_limits(
    m8: list[Resource], backing: list[Resource]
) -> None:
    workloads = {**_workloads(m8), **_workloads(backing)}
    jobs = {r["metadata"]["name"]: r for r in backing if r["kind"] == "Job"}
    missing = [
        f"{name}/{container['name']}: {part}.{resource}"
        for name, workload in {**workloads, **jobs}.items()
        for container in containers(workload)
        for part in ("requests", "limits")
        for resource in ("cpu", "memory")
        if resource not in container.get("resources", {}).get(part, {})
    ]
    assert len(workloads) == 5
    assert missing == []


def test_m8_pods_run_unprivileged_on_a_read_only_root(m8: list[Resource]) -> None:
    for component in M8_COMPONENTS:
        deployment = _deployment(m8, component)
        assert pod_spec(deployment)["securityContext"]["runAsNonRoot"] is True
        assert pod_spec(deployment)["automountServiceAccountToken"] is False
        for container in containers(deployment):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, component
            assert context["allowPrivilegeEscalation"] is False, component
            assert context["capabilities"]["drop"] == ["ALL"], component


def test_every_workload_has_a_disruption_budget(
    m8: list[Resource], backing: list[Resource]
) -> None:
    budgets = [r for r in [*m8, *backing] if r["kind"] == "PodDisruptionBudget"]
    workloads = {**_workloads(m8), **_workloads(backing)}
    for name, workload in workloads.items():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        assert len(covering) == 1, name
        assert covering[0]["spec"].get("maxUnavailable") == 1, name
    # The operator's RabbitMQ pods carry app.kubernetes.io/name: <cluster name>.
    rabbitmq = {"app.kubernetes.io/name": "m8-rabbitmq"}
    assert [b for b in budgets if selects(b["spec"]["selector"], rabbitmq)]


# ---- scaling ------------------------------------------------------------------------------


def test_the_api_and_the_reactors_scale_horizontally(m8: list[Resource]) -> None:
    autoscalers = named(m8, "HorizontalPodAutoscaler")
    targets = {a["spec"]["scaleTargetRef"]["name"]: a["spec"] for a in autoscalers.values()}
    assert set(targets) == {"m8-api", "m8-reactor-vault", "m8-reactor-aws"}
    for target, spec in targets.items():
        deployment = named(m8, "Deployment")[target]
        assert spec["scaleTargetRef"]["kind"] == "Deployment"
        assert spec["minReplicas"] >= 2, target
        assert spec["maxReplicas"] > spec["minReplicas"], target
        # Left to the autoscaler: `kubectl apply` would otherwise reset it.
        assert "replicas" not in deployment["spec"], target
    assert _deployment(m8, "keyrotator")["spec"]["replicas"] == 2


def test_the_apis_rate_limit_share_follows_its_most_replicas(m8: list[Resource]) -> None:
    # Each API replica enforces total / M8_API_REPLICAS of the per-caller limits: with the
    # share for maxReplicas, the totals hold however many replicas run.
    settings = named(m8, "ConfigMap")["m8-settings"]["data"]
    autoscaler = named(m8, "HorizontalPodAutoscaler")["m8-api"]["spec"]
    assert int(settings["api-replicas"]) == autoscaler["maxReplicas"]


# ---- network ------------------------------------------------------------------------------

Port = tuple[str, int | str]
ANY_PORT: Port = ("*", "*")


def _egress(resources: list[Resource], labels: dict[str, str]) -> set[Port] | None:
    """The ports a pod with `labels` may connect to (ANY_PORT for a rule without ports), or
    None when no policy restricts its egress."""
    policies = [
        p["spec"]
        for p in resources
        if p["kind"] == "NetworkPolicy"
        and "Egress" in p["spec"].get("policyTypes", [])
        and selects(p["spec"]["podSelector"], labels)
    ]
    if not policies:
        return None
    allowed: set[Port] = set()
    for policy in policies:
        for rule in policy.get("egress", []):
            ports = rule.get("ports")
            if not ports:
                allowed.add(ANY_PORT)
            for port in ports or []:
                allowed.add((port.get("protocol", "TCP"), port.get("port", "*")))
    return allowed


def test_only_the_reactors_reach_the_upstream_stores(m8: list[Resource]) -> None:
    for component in M8_COMPONENTS:
        labels = _deployment(m8, component)["spec"]["template"]["metadata"]["labels"]
        allowed = _egress(m8, labels)
        assert allowed is not None, f"{component}: egress not restricted"
        expected = DNS_PORTS | BACKING_PORTS
        if component in REACTORS:
            expected |= UPSTREAM_PORTS
        assert allowed == expected, component


def test_ingress_reaches_only_the_apis_port_and_metrics_from_monitoring(
    m8: list[Resource],
) -> None:
    policies = [p["spec"] for p in m8 if p["kind"] == "NetworkPolicy"]
    deny_all = [p for p in policies if p["podSelector"] == {} and "Ingress" in p["policyTypes"]]
    assert deny_all
    assert all(not p.get("ingress") for p in deny_all)
    for component in M8_COMPONENTS:
        labels = _deployment(m8, component)["spec"]["template"]["metadata"]["labels"]
        ports = {
            port["port"]
            for p in policies
            if selects(p["podSelector"], labels)
            for rule in p.get("ingress", [])
            for port in rule["ports"]
        }
        expected = {"api": {8080, 9100}}.get(component, {9100})
        assert ports == expected, component


# ---- key material -------------------------------------------------------------------------


def _secrets_of(deployment: Resource) -> tuple[set[str], set[tuple[str, str]]]:
    """The Secrets a Deployment's pods mount (volumes, projected volumes included), and
    the single Secret keys its containers' environment takes."""
    volumes = set()
    for volume in pod_spec(deployment).get("volumes", []):
        if "secret" in volume:
            volumes.add(volume["secret"]["secretName"])
        for source in volume.get("projected", {}).get("sources", []):
            if "secret" in source:
                volumes.add(source["secret"]["name"])
    keys = set()
    for container in containers(deployment):
        # envFrom would hand over every key of a Secret (every service's URLs).
        assert not any("secretRef" in source for source in container.get("envFrom", []))
        for variable in container.get("env", []):
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            if reference:
                keys.add((reference["name"], reference["key"]))
    return volumes, keys


@pytest.mark.parametrize("component", M8_COMPONENTS)
def test_each_service_gets_only_its_own_key_material(m8: list[Resource], component: str) -> None:
    volumes, keys = _secrets_of(_deployment(m8, component))
    assert volumes == SECRET_VOLUMES[component]
    assert keys == {
        ("m8-connections", f"{component}-amqp-url"),
        ("m8-connections", f"{component}-mongodb-uri"),
    }


def test_the_api_gets_no_kek_fingerprint_key_or_upstream_credential(
    m8: list[Resource],
) -> None:
    volumes, _ = _secrets_of(_deployment(m8, "api"))
    assert not volumes & {
        "m8-reactor-vault",
        "m8-reactor-aws",
        "m8-fingerprint-key",
        "m8-keyrotator-master-key",
    }


def test_a_reactor_group_never_gets_the_other_groups_secret(m8: list[Resource]) -> None:
    vault, _ = _secrets_of(_deployment(m8, "reactor-vault"))
    aws, _ = _secrets_of(_deployment(m8, "reactor-aws"))
    assert "m8-reactor-aws" not in vault
    assert "m8-reactor-vault" not in aws


# ---- RabbitMQ and MongoDB -----------------------------------------------------------------


def test_rabbitmq_runs_three_nodes_for_m8s_quorum_queues(backing: list[Resource]) -> None:
    cluster = named(backing, "RabbitmqCluster")["m8-rabbitmq"]["spec"]
    assert cluster["replicas"] >= 3
    assert cluster["replicas"] % 2 == 1  # a majority survives the loss of a minority
    assert "prometheus.return_per_object_metrics = true" in cluster["rabbitmq"]["additionalConfig"]
    definitions = json.loads((DEPLOY / "rabbitmq" / "definitions.json").read_text())
    classic = {
        queue["name"]
        for queue in definitions["queues"]
        if queue["arguments"].get("x-queue-type") != "quorum"
    }
    # Every work queue and dead-letter queue is a quorum queue (replicated on every node);
    # the key rotator's RPC request queue alone is classic (m8.messaging.rpc), so it is
    # out of service while its node is down (the API's calls time out, and are retried).
    assert len(definitions["queues"]) > len(classic)
    assert classic == {RPC_KEYROTATOR_QUEUE}


def test_mongodb_is_an_authenticated_replica_set(backing: list[Resource]) -> None:
    mongodb = named(backing, "StatefulSet")["m8-mongodb"]
    assert mongodb["spec"]["replicas"] == 3
    (mongod,) = pod_spec(mongodb)["containers"]
    assert "--replSet=rs0" in mongod["args"]
    assert any(arg.startswith("--keyFile=") for arg in mongod["args"])
    bootstrap = named(backing, "ConfigMap")["m8-mongodb-scripts"]["data"]["bootstrap.js"]
    assert "[0, 1, 2].map" in bootstrap  # every member of the StatefulSet joins rs0


@pytest.mark.parametrize(("job", "server"), [("rabbitmq", "RABBITMQ"), ("mongodb", "MONGODB")])
def test_every_service_gets_a_user_of_its_own(
    backing: list[Resource], job: str, server: str
) -> None:
    (container,) = pod_spec(named(backing, "Job")[f"m8-{job}-users"])["containers"]
    passwords = {
        variable["name"]: variable["valueFrom"]["secretKeyRef"]
        for variable in container["env"]
        if variable["name"].endswith("_PASSWORD") and "ADMIN" not in variable["name"]
    }
    assert passwords == {
        f"M8_{server}_{service.upper().replace('-', '_')}_PASSWORD": {
            "name": f"m8-{job}-passwords",
            "key": service,
        }
        for service in services()
    }
    # A password is never an argument (it would show in the process list).
    assert not [arg for arg in container.get("command", []) if "PASSWORD" in arg]


def _referenced_secrets(resources: list[Resource]) -> set[str]:
    names = set()
    for workload in [r for r in resources if r["kind"] in ("Deployment", "StatefulSet", "Job")]:
        volumes, keys = _secrets_of(workload)
        names |= volumes | {name for name, _ in keys}
    return names


def test_secrets_example_shows_every_secret_the_manifests_reference(
    m8: list[Resource],
    backing: list[Resource],
    crd_schemas: dict[tuple[str, str], dict[str, Any]],
) -> None:
    examples = [
        doc
        for doc in yaml.safe_load_all((DEPLOY / "k8s" / "secrets.example.yaml").read_text())
        if doc
    ]
    assert list(_validation_errors(examples, crd_schemas)) == []
    shown = {doc["metadata"]["name"] for doc in examples}
    # Made by the RabbitMQ cluster operator itself.
    made_elsewhere = {"m8-rabbitmq-default-user"}
    assert _referenced_secrets([*m8, *backing]) - made_elsewhere == shown
