"""m8's Kubernetes Deployments (deploy/k8s) played by `podman kube play` on the local servers.

kustomize renders the manifests as `kubectl apply -k` would send them; of those, podman
plays the four Deployments with the ConfigMap and the Secrets they reference. The point
is to prove the manifests' own shapes: commands and arguments, variable names, the
ConfigMap's file paths, the init containers that copy key files, the volume mounts,
securityContext (user 10001, read-only root), and the probes' ports and paths. So they
are changed only where this machine or podman needs it, each change one function of
`ADAPTATIONS` below that says why:

- `keep_what_podman_plays`: the Deployments and the ConfigMap only (no cluster here for
  Services, NetworkPolicies, autoscalers, disruption budgets, service accounts).
- `on_host_network`: `hostNetwork: true`, as the local servers listen on 127.0.0.1; the
  services' listeners there too (`0.0.0.0` in the manifests), not on every interface of
  the machine.
- `local_images`: the images built from this tree, `m8-*:local`.
- `one_replica`: one pod each, and `api-replicas` 1 to match (the ConfigMap's rule).
- `free_ports`: on one host network, each container port becomes a free one (every
  service's metrics port is 9100); the variables and probes that named it follow.
- `local_database`: the test's own database in the ConfigMap.
- `upstream_logins`: the local AWS emulator's keys for the AWS reactor, from a Secret of
  its own (as reactor-aws.yaml says static keys must come).
- `flatten_projected`: podman 4.3 has no projected volumes: one becomes a Secret volume
  of a Secret holding what its sources held.
- `required_secrets`: `optional: false` written out on Secret volumes, as podman 4.3
  crashes on the unset field (containers/podman#16636).
- `own_empty_dirs`: podman 4.3 makes an emptyDir a volume named as the pod's volume,
  shared by every pod naming one the same (`keys`): each Deployment's gets its own name.
- `unpublished_ports`: no `ports` lists (probes get the numbers they named), as podman
  4.3 publishes every container port and refuses that on the host's network.
- `kept_init_containers`: init containers kept after they ran (podman's type `always`),
  as podman 4.3 fails a pod when removing a `once` one races with its exit.

The Secrets are made from the files the test's services read (tests/support/images.py
mounts the same ones): a manifest's variable names a file, the test's same variable the
file that goes there, and the file name is the Secret key, as in deploy/README step 3.
Beside the manifests, podman itself gets this machine's ulimits (a containers.conf), as
`podman run` gets them in images.py, and the Secrets are made with `podman secret create`
in the forms podman 4.3 reads (`_create_secret`), not from Secret documents.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import yaml  # type: ignore[import-untyped]

from m8 import stores
from m8.crypto.keyfiles import write_private_file
from m8.devservices import ServiceError, Services
from m8.devservices.images import image, limits, podman
from m8.devservices.manager import free_port, http_ok, wait_until
from m8.devservices.system import System
from tests.deploy import kustomize
from tests.support.images import ContainerSystem, container_logs, service_environments

Resource = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_K8S = ROOT / "deploy" / "k8s"
SETTINGS = "m8-settings"
CONNECTIONS = "m8-connections"
# The label naming a Deployment's service as the test's environments do: api, keyrotator,
# reactor-vault, reactor-aws.
COMPONENT = "app.kubernetes.io/component"

# Which of the test's files each Secret holds: (component, the manifest's variable, the
# test's variable). The manifest's variable names the file where the Secret puts it; the
# test's, the file the process-based and `podman run` systems read. The reactors'
# Secrets are added per store type below.
SECRET_FILES: dict[str, list[tuple[str, str, str]]] = {
    "m8-api-tokens": [("api", "M8_API_TOKEN_FILE", "M8_API_TOKEN_FILE")],
    "m8-keyrotator-master-key": [
        ("keyrotator", "M8_KEYROTATOR_MASTER_KEY_FILES", "M8_KEYROTATOR_MASTER_KEY_FILE")
    ],
    "m8-kek-public": [("keyrotator", "M8_KEYROTATOR_KEK_FILES", "M8_KEYROTATOR_KEK_FILES")],
}
# Each reactor's own Secret (`m8-reactor-<type>`) holds these, and every reactor reads the
# fingerprint key from the one Secret they share.
REACTOR_FILES = (
    "M8_REACTOR_KEK_FILES",
    "M8_REACTOR_RECEIPT_KEY_FILE",
    "M8_REACTOR_CREDENTIALS_FILE",
)
FINGERPRINT = ("m8-fingerprint-key", "M8_REACTOR_FINGERPRINT_KEY_FILE")


@dataclass
class Local:
    """What the manifests are adapted to: this run's environments, database and ports."""

    environments: dict[str, dict[str, str]]
    database: str
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    # Each component's container ports as played: {component: {port name: number}}.
    ports: dict[str, dict[str, int]] = field(default_factory=dict)


def render() -> list[Resource]:
    """`kubectl kustomize deploy/k8s`, as `kubectl apply -k` sends it."""
    return kustomize.render(DEPLOY_K8S)


def deployments(resources: list[Resource]) -> list[Resource]:
    return [r for r in resources if r["kind"] == "Deployment"]


def component(deployment: Resource) -> str:
    label: str = deployment["spec"]["template"]["metadata"]["labels"][COMPONENT]
    return label


def pod_spec(deployment: Resource) -> Resource:
    spec: Resource = deployment["spec"]["template"]["spec"]
    return spec


def main_container(deployment: Resource) -> Resource:
    """The service's container (each m8 Deployment has one, beside its init container)."""
    containers: list[Resource] = pod_spec(deployment)["containers"]
    (container,) = containers
    return container


def _all_containers(deployment: Resource) -> list[Resource]:
    spec = pod_spec(deployment)
    return [*spec.get("initContainers", []), *spec["containers"]]


def _settings(resources: list[Resource]) -> dict[str, str]:
    (config_map,) = (r for r in resources if r["kind"] == "ConfigMap")
    data: dict[str, str] = config_map["data"]
    return data


def manifest_env(container: Resource, settings: dict[str, str]) -> dict[str, str]:
    """A container's variables that are literal or from the ConfigMap, resolved."""
    resolved = {}
    for variable in container.get("env", []):
        if "value" in variable:
            resolved[variable["name"]] = variable["value"]
        elif "configMapKeyRef" in variable.get("valueFrom", {}):
            resolved[variable["name"]] = settings[variable["valueFrom"]["configMapKeyRef"]["key"]]
    return resolved


def _files(value: str) -> list[str]:
    """The files a variable names: comma-separated, or JSON lists per store type (each
    side's types sorted, so a manifest's and the test's files pair up)."""
    if value.lstrip().startswith("{"):
        per_type: dict[str, list[str]] = json.loads(value)
        return [name for store_type in sorted(per_type) for name in per_type[store_type]]
    return [name.strip() for name in value.split(",") if name.strip()]


# ---- the adaptations, in the order they run -------------------------------------------


def keep_what_podman_plays(resources: list[Resource], local: Local) -> list[Resource]:
    """The Deployments and the ConfigMap they read; the rest needs a cluster."""
    return [r for r in resources if r["kind"] in ("Deployment", "ConfigMap")]


def on_host_network(resources: list[Resource], local: Local) -> list[Resource]:
    """The pods on the host's network, where the local servers listen (127.0.0.1). What
    listens on every interface of a pod (`0.0.0.0`: M8_API_HOST, the metrics hosts) listens
    on 127.0.0.1 instead: every interface of the pod is the machine's here."""
    for deployment in deployments(resources):
        pod_spec(deployment)["hostNetwork"] = True
        for variable in main_container(deployment).get("env", []):
            if variable.get("value") == "0.0.0.0":
                variable["value"] = "127.0.0.1"
    return resources


def local_images(resources: list[Resource], local: Local) -> list[Resource]:
    """Each image as built from this tree by m8.devservices.images (`m8-api:local`)."""
    for deployment in deployments(resources):
        for container in _all_containers(deployment):
            name = container["image"].rsplit("/", 1)[-1].split(":", 1)[0]
            container["image"] = image(name.removeprefix("m8-"))
    return resources


def one_replica(resources: list[Resource], local: Local) -> list[Resource]:
    """One pod per Deployment, and `api-replicas` equal to the API's (deploy/README: without
    the autoscaler, the Deployment's replicas)."""
    for deployment in deployments(resources):
        deployment["spec"]["replicas"] = 1
    _settings(resources)["api-replicas"] = "1"
    return resources


def free_ports(resources: list[Resource], local: Local) -> list[Resource]:
    """A free port for each container port: the pods share one network here. The literal
    variables and the numeric probe ports that named a port follow it."""
    for deployment in deployments(resources):
        container = main_container(deployment)
        moved = {}
        for port in container.get("ports", []):
            moved[port["containerPort"]] = free_port()
            port["containerPort"] = moved[port["containerPort"]]
        for variable in container.get("env", []):
            if "value" in variable and variable["value"].isdigit():
                variable["value"] = str(moved.get(int(variable["value"]), variable["value"]))
        for probe in _probes(container):
            if isinstance(probe["port"], int):
                probe["port"] = moved.get(probe["port"], probe["port"])
        local.ports[component(deployment)] = {
            p.get("name", str(p["containerPort"])): p["containerPort"]
            for p in container.get("ports", [])
        }
    return resources


def local_database(resources: list[Resource], local: Local) -> list[Resource]:
    """The test's own database, as M8_MONGODB_DATABASE is the ConfigMap's."""
    _settings(resources)["mongodb-database"] = local.database
    return resources


def upstream_logins(resources: list[Resource], local: Local) -> list[Resource]:
    """The keys a reactor needs for its type's local server (the AWS emulator's), from a
    Secret of that reactor's own, as reactor-aws.yaml says static keys must come."""
    for deployment in deployments(resources):
        service = component(deployment)
        if not service.startswith("reactor-"):
            continue
        dev = stores.get(main_container(deployment)["args"][-1]).dev
        if dev is None or not dev.reactor_environment:
            continue
        secret = f"m8-{service}-login"
        env = local.environments[service]
        local.secrets[secret] = {name: env[name] for name in dev.reactor_environment}
        main_container(deployment).setdefault("env", []).extend(
            {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}}
            for name in dev.reactor_environment
        )
    return resources


def flatten_projected(resources: list[Resource], local: Local) -> list[Resource]:
    """A projected volume (podman 4.3 has none) as one Secret volume, of a Secret holding
    what its sources (Secrets only here) would have put there."""
    for deployment in deployments(resources):
        for volume in pod_spec(deployment).get("volumes", []):
            projected = volume.pop("projected", None)
            if projected is None:
                continue
            merged: dict[str, str] = {}
            for source in projected["sources"]:
                held = local.secrets[source["secret"]["name"]]
                items = source["secret"].get("items")
                for item in items or [{"key": key, "path": key} for key in held]:
                    merged[item["path"]] = held[item["key"]]
            name = f"{deployment['metadata']['name']}-{volume['name']}"
            local.secrets[name] = merged
            volume["secret"] = {"secretName": name}
            if "defaultMode" in projected:
                volume["secret"]["defaultMode"] = projected["defaultMode"]
    return resources


def unpublished_ports(resources: list[Resource], local: Local) -> list[Resource]:
    """No `ports` list (each probe naming a port gets its number instead): podman 4.3
    publishes every container port, which a pod on the host's network refuses ("PortMappings
    can only be used with Bridge or slirp4netns networking"). On the host's network each
    port is reachable as it is."""
    for deployment in deployments(resources):
        container = main_container(deployment)
        numbers = {p["name"]: p["containerPort"] for p in container.pop("ports", []) if "name" in p}
        for probe in _probes(container):
            probe["port"] = numbers.get(probe["port"], probe["port"])
    return resources


def kept_init_containers(resources: list[Resource], local: Local) -> list[Resource]:
    """Init containers of type `always` (podman's annotation): kept after they ran, not
    removed at once, which podman 4.3 tries before it has seen them exit ("cannot remove
    container ... as it is running") and then fails the pod."""
    for deployment in deployments(resources):
        if pod_spec(deployment).get("initContainers"):
            annotations = deployment["metadata"].setdefault("annotations", {})
            annotations["io.podman.annotations.init.container.type"] = "always"
    return resources


def required_secrets(resources: list[Resource], local: Local) -> list[Resource]:
    """`optional: false` written out on each Secret volume: it is Kubernetes' default, but
    podman 4.3 dereferences the unset field and crashes (containers/podman#16636)."""
    for deployment in deployments(resources):
        for volume in pod_spec(deployment).get("volumes", []):
            if "secret" in volume:
                volume["secret"].setdefault("optional", False)
    return resources


def own_empty_dirs(resources: list[Resource], local: Local) -> list[Resource]:
    """Each Deployment's emptyDir volumes named after it: podman 4.3 makes an emptyDir a
    volume named as the pod's volume, which every pod naming one `keys` would share."""
    for deployment in deployments(resources):
        prefix = deployment["metadata"]["name"]
        renamed = {}
        for volume in pod_spec(deployment).get("volumes", []):
            if "emptyDir" in volume:
                renamed[volume["name"]] = volume["name"] = f"{prefix}-{volume['name']}"
        for container in _all_containers(deployment):
            for mount in container.get("volumeMounts", []):
                mount["name"] = renamed.get(mount["name"], mount["name"])
    return resources


ADAPTATIONS: tuple[Callable[[list[Resource], Local], list[Resource]], ...] = (
    keep_what_podman_plays,
    on_host_network,
    local_images,
    one_replica,
    free_ports,
    local_database,
    upstream_logins,
    flatten_projected,
    required_secrets,
    own_empty_dirs,
    unpublished_ports,
    kept_init_containers,
)


def _probes(container: Resource) -> list[Resource]:
    """The httpGet actions of a container's probes."""
    kinds = ("startupProbe", "readinessProbe", "livenessProbe")
    return [container[k]["httpGet"] for k in kinds if "httpGet" in container.get(k, {})]


def manifest_secrets(resources: list[Resource], local: Local) -> None:
    """The Secrets the Deployments reference, made from the test's files and URLs."""
    settings = _settings(resources)
    by_component = {component(d): d for d in deployments(resources)}
    wanted = dict(SECRET_FILES)
    for service in by_component:
        if service.startswith("reactor-"):
            wanted[f"m8-{service}"] = [(service, v, v) for v in REACTOR_FILES]
            wanted.setdefault(FINGERPRINT[0], []).append((service, FINGERPRINT[1], FINGERPRINT[1]))
    for secret, sources in wanted.items():
        data = local.secrets.setdefault(secret, {})
        for service, ours, theirs in sources:
            env = manifest_env(main_container(by_component[service]), settings)
            where, what = _files(env[ours]), _files(local.environments[service][theirs])
            if len(where) != len(what):
                raise ServiceError(
                    f"{service}: {ours} names {len(where)} files, the test has {len(what)}"
                )
            for target, source in zip(where, what, strict=True):
                data[PurePosixPath(target).name] = Path(source).read_text()
    # Each service's broker and database URLs, under the keys its Deployment reads.
    connections = local.secrets.setdefault(CONNECTIONS, {})
    for service, deployment in by_component.items():
        for variable in main_container(deployment).get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef", {})
            if ref.get("name") == CONNECTIONS:
                connections[ref["key"]] = local.environments[service][variable["name"]]


def adapt(resources: list[Resource], local: Local) -> list[Resource]:
    """The rendered manifests as podman plays them here; the Secrets they reference in
    `local.secrets`."""
    played = copy.deepcopy(resources)
    manifest_secrets(played, local)
    for adaptation in ADAPTATIONS:
        played = adaptation(played, local)
    return played


# ---- playing them --------------------------------------------------------------------


@dataclass
class PlayedSystem(ContainerSystem):
    """The Deployments as podman plays them: the pods' service containers in
    `containers`, and what `podman kube down` leaves behind to remove."""

    manifest: Path = Path()
    pods: list[str] = field(default_factory=list)
    init_containers: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    probes: dict[str, str] = field(default_factory=dict)
    play_seconds: float = 0.0

    def logs(self, lines: int = 40) -> str:
        return container_logs([*self.init_containers, *self.containers], lines)

    def stop(self) -> None:
        """`podman kube down`, then the Secrets and volumes it leaves (podman 4.3 keeps
        them: the volumes hold copies of the key files)."""
        _podman("kube", "down", str(self.manifest))
        # kube down stops at the first pod it does not find (one a failed play never made).
        _podman("pod", "rm", "--force", "--ignore", "--time", "20", *self.pods)
        if self.secrets:
            _podman("secret", "rm", *self.secrets)
        if self.volumes:
            _podman("volume", "rm", "--force", *self.volumes)


def _podman(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*podman(), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env=env,
    )


def _containers_conf(workdir: Path) -> Path:
    """A containers.conf with the ulimits a container may have here (podman's defaults
    need CAP_SYS_RESOURCE, which this machine's containers lack: images.limits)."""
    options = limits()
    ulimits = [value for flag, value in zip(options[::2], options[1::2], strict=True)]
    assert all(flag == "--ulimit" for flag in options[::2])
    conf = workdir / "containers.conf"
    conf.write_text(f"[containers]\ndefault_ulimits = {json.dumps(ulimits)}\n")
    return conf


def _names(played: list[Resource], local: Local) -> PlayedSystem:
    """Where podman puts what it plays: pod `<deployment>-pod-0`, container
    `<pod>-<container>`, a volume per Secret volume (named as the Secret) and emptyDir."""
    names = PlayedSystem(System(Path()), prefix="", secrets=list(local.secrets))
    for resource in played:
        if resource["kind"] != "Deployment":
            continue
        pod = f"{resource['metadata']['name']}-pod-0"
        names.pods.append(pod)
        spec = pod_spec(resource)
        names.init_containers += [f"{pod}-{c['name']}" for c in spec.get("initContainers", [])]
        names.containers += [f"{pod}-{c['name']}" for c in spec["containers"]]
        for volume in spec.get("volumes", []):
            if "emptyDir" in volume:
                names.volumes.append(volume["name"])
            elif "secret" in volume:
                names.volumes.append(volume["secret"]["secretName"])
    return names


def _read_as_variables(played: list[Resource]) -> set[str]:
    """The Secrets some container reads variables from (`secretKeyRef`)."""
    return {
        variable["valueFrom"]["secretKeyRef"]["name"]
        for deployment in deployments(played)
        for container in _all_containers(deployment)
        for variable in container.get("env", [])
        if "secretKeyRef" in variable.get("valueFrom", {})
    }


def _create_secret(name: str, data: dict[str, str], as_variables: bool) -> None:
    """A Secret made as podman 4.3 reads it, not from a Secret document (kube play keeps
    one whole, and then puts nothing of `stringData` and `data` still base64 into a Secret
    volume, and reads no variable from it: containers/podman#16269). For variables, a
    podman secret holding JSON, each value base64; for a volume, a Secret document whose
    `data` holds the values as they are. The values go on podman's standard input."""
    if as_variables:
        content = json.dumps({k: base64.b64encode(v.encode()).decode() for k, v in data.items()})
    else:
        document = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}}
        content = yaml.safe_dump({**document, "type": "Opaque", "data": data})
    done = subprocess.run(
        [*podman(), "secret", "create", name, "-"],
        input=content,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        raise ServiceError(f"podman secret create {name} failed: {done.stderr.strip()}")


def probe_urls(played: list[Resource], local: Local) -> dict[str, str]:
    """Every httpGet probe of the played Deployments, and /metrics on every port named
    `metrics` (what Prometheus scrapes): what each is, by its URL on this host."""
    urls: dict[str, str] = {}
    for deployment in deployments(played):
        name, container = deployment["metadata"]["name"], main_container(deployment)
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(kind, {}).get("httpGet")
            if probe is not None:
                url = f"http://127.0.0.1:{probe['port']}{probe.get('path', '/')}"
                urls[url] = f"{urls[url]}, {kind}" if url in urls else f"{name} {kind}"
        metrics = local.ports[component(deployment)].get("metrics")
        if metrics is not None:
            urls.setdefault(f"http://127.0.0.1:{metrics}/metrics", f"{name} metrics")
    return urls


def play(services: Services, workdir: Path, overrides: dict[str, str]) -> PlayedSystem:
    """Plays m8's Deployments with `podman kube play` on the local servers, waits until
    the API is ready and registers the dev stores; a ServiceError with the pods' logs
    otherwise."""
    system, environments = service_environments(services, workdir, overrides)
    local = Local(environments, overrides["M8_MONGODB_DATABASE"])
    played = adapt(render(), local)
    manifest = workdir / "kube-play.yaml"
    write_private_file(manifest, yaml.safe_dump_all(played, sort_keys=False), overwrite=True)
    running = _names(played, local)
    running.system, running.manifest, running.prefix = system, manifest, "m8-kube"
    running.probes = probe_urls(played, local)
    system.api_url = f"http://127.0.0.1:{local.ports['api']['http']}"
    running.stop()  # what a run that was cut short left behind
    try:
        as_variables = _read_as_variables(played)
        for name, data in local.secrets.items():
            _create_secret(name, data, name in as_variables)
        started = time.monotonic()
        done = _podman(
            "kube", "play", "--network", "host", str(manifest),
            env={**os.environ, "CONTAINERS_CONF": str(_containers_conf(workdir))},
        )  # fmt: skip
        running.play_seconds = time.monotonic() - started
        if done.returncode != 0:
            raise ServiceError(f"podman kube play failed: {done.stderr.strip()}")

        def ready() -> bool:
            return not running.running() or http_ok(f"{system.api_url}/readyz")

        if not (wait_until(ready, 120) and running.running()):
            raise ServiceError("m8's pods did not come up")
        system.register_stores(services)
    except (ServiceError, httpx.HTTPError) as exc:
        logs = running.logs()
        running.stop()
        raise ServiceError(f"{exc}{logs}") from None
    return running
