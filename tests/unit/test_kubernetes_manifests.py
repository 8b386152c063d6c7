"""deploy/kubernetes/: every manifest checked against the Kubernetes API schemas (offline, strict:
an unknown field fails), and for what reporun needs of its pods."""

from __future__ import annotations

import copy
import socket
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
# The oldest Kubernetes the manifests are for: user namespaces (hostUsers) and ProcMountType are
# on by default from 1.33. kubernetes-validate ships the schemas of each release in its wheel.
KUBERNETES = "1.33"
WORKER = "reporun-worker"

Doc = dict[str, Any]


def load(text: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def manifests() -> dict[str, list[Doc]]:
    return {
        path.name: load(path.read_text())
        for path in sorted(MANIFESTS.glob("*.y*ml"))
        if path.name != "kustomization.yaml"
    }


def objects(kind: str | None = None) -> list[Doc]:
    found = [doc for docs in manifests().values() for doc in docs]
    return [doc for doc in found if kind is None or doc["kind"] == kind]


def find(kind: str, name: str) -> Doc:
    (found,) = [doc for doc in objects(kind) if doc["metadata"]["name"] == name]
    return found


def selects(selector: dict[str, str], name: str) -> bool:
    labels: dict[str, str] = find("Deployment", name)["spec"]["template"]["metadata"]["labels"]
    return selector.items() <= labels.items()


def validate(doc: Doc, *, strict: bool = True) -> str:
    return str(kubernetes_validate.validate(doc, KUBERNETES, strict=strict))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection or a name lookup fails the test: the schemas must all be local."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("kubernetes-validate tried the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize("name", sorted(manifests()))
def test_every_manifest_validates_against_the_pinned_schemas(name: str) -> None:
    for doc in manifests()[name]:
        assert validate(doc) == KUBERNETES, doc["kind"]  # those exact schemas, no older ones


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize(
    ("path", "value", "only_strict"),
    [
        (("spec", "template", "spec", "hostUser"), False, True),  # a typo of hostUsers
        (("spec", "template", "spec", "containers", 0, "securityContext", "procMout"), "x", True),
        (("spec", "replicas"), "two", False),
        (("spec", "template", "spec", "terminationGracePeriodSeconds"), "630s", False),
    ],
)
def test_the_validator_refuses_a_broken_manifest(
    path: tuple[str | int, ...], value: object, only_strict: bool
) -> None:
    broken = copy.deepcopy(find("Deployment", WORKER))
    parent: Any = broken
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    if only_strict:  # the loose schemas let unknown fields through: strict is what bites
        validate(broken, strict=False)


def test_every_part_has_probes_on_healthz_and_readyz() -> None:
    for deployment in objects("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            ports = {p[key] for p in container["ports"] for key in ("name", "containerPort")}
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                get = container[probe]["httpGet"]
                assert get["path"] == path and get["port"] in ports, (container["name"], probe)


def test_no_container_is_privileged_or_root_and_each_has_resources() -> None:
    for deployment in objects("Deployment"):
        name, pod = deployment["metadata"]["name"], deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
        assert not any(pod.get(f"host{ns}") for ns in ("Network", "PID", "IPC"))
        for container in pod.get("initContainers", []) + pod["containers"]:
            context = {**pod["securityContext"], **container["securityContext"]}
            assert context.get("privileged", False) is False, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["runAsNonRoot"] is True, name
            assert context["runAsUser"] == context["runAsGroup"] == 10001, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["readOnlyRootFilesystem"] is True, name
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) >= {"cpu", "memory"}, name
            if name != WORKER:  # only the worker loosens /proc and seccomp
                assert "procMount" not in context and "hostUsers" not in pod, name
                assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name


def test_the_worker_can_run_bubblewrap_and_drain_its_job() -> None:
    pod = find("Deployment", WORKER)["spec"]["template"]["spec"]
    assert pod["hostUsers"] is False
    (container,) = pod["containers"]
    assert container["securityContext"]["procMount"] == "Unmasked"
    assert container["securityContext"]["seccompProfile"]["type"] in {"Unconfined", "Localhost"}
    grace = float(find("ConfigMap", "reporun")["data"]["REPORUN_DRAIN_GRACE"])
    assert pod["terminationGracePeriodSeconds"] >= grace + 10  # time to give the job back
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in ("/var/lib/reporun/data", "/tmp"):
        (name,) = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == mount]
        assert "emptyDir" in volumes[name]


def test_budgets_and_the_service_select_the_right_pods() -> None:
    api, worker = find("PodDisruptionBudget", "reporun-api"), find("PodDisruptionBudget", WORKER)
    assert api["spec"]["minAvailable"] == 1 and worker["spec"]["maxUnavailable"] == 1
    assert selects(api["spec"]["selector"]["matchLabels"], "reporun-api")
    assert selects(worker["spec"]["selector"]["matchLabels"], WORKER)
    service = find("Service", "reporun-api")["spec"]
    for other in (WORKER, "reporun-observer"):
        assert not selects(service["selector"], other)
        assert not selects(api["spec"]["selector"]["matchLabels"], other)
    assert selects(service["selector"], "reporun-api")
    (port,) = service["ports"]
    (container,) = find("Deployment", "reporun-api")["spec"]["template"]["spec"]["containers"]
    (target,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    assert port["port"] == 80 and target["containerPort"] == 8000


def test_the_observer_is_one_replica_replaced_not_rolled() -> None:
    observer = find("Deployment", "reporun-observer")["spec"]
    assert observer["replicas"] == 1 and observer["strategy"] == {"type": "Recreate"}
    (container,) = observer["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["REPORUN_HEALTH_PORT"] == "8001"
    assert find("ConfigMap", "reporun")["data"]["REPORUN_SCALER"] == "none"


def test_the_kustomization_lists_every_manifest_and_names_the_image_once() -> None:
    (kustomization,) = load((MANIFESTS / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(manifests())
    assert kustomization["namespace"] == "reporun"
    (image,) = kustomization["images"]
    assert image["name"] == "reporun" and {"newName", "newTag"} <= image.keys()
    for deployment in objects("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert {c["image"] for c in pod.get("initContainers", []) + pod["containers"]} == {
            "reporun"
        }


def test_no_secret_value_is_committed() -> None:
    (kustomization,) = load((MANIFESTS / "kustomization.yaml").read_text())
    assert "secretGenerator" not in kustomization
    for secret in objects("Secret"):
        assert not secret.get("data") and not secret.get("stringData"), secret["metadata"]
    assert not any("DATABASE" in key for key in find("ConfigMap", "reporun")["data"])
    for deployment in objects("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            (url,) = [e for e in container["env"] if e["name"] == "REPORUN_DATABASE_URL"]
            assert url["valueFrom"]["secretKeyRef"] == {"name": "reporun", "key": "database-url"}
