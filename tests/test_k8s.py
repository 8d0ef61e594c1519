"""The Kubernetes manifests (deploy/k8s): every overlay renders with kustomize, validates offline against the
Kubernetes schemas, and names the probes, ports, settings and volumes the service really has."""

import copy
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from service.app import create_app
from service.settings import Settings
from trainer.__main__ import train_parser

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")  # the oldest we support and the newest the schemas know
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (.ci/run installs it): "
                                                           "the overlays cannot be rendered")


def render(overlay: str) -> list[dict]:
    out = subprocess.run([KUBECTL, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "KUBECONFIG": os.devnull})
    assert out.returncode == 0, out.stderr
    return list(yaml.safe_load_all(out.stdout))


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


def settings_of(docs: list[dict]) -> dict[str, str]:
    return one(docs, "ConfigMap")["data"]


def container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def routes() -> set[str]:
    return set(create_app(Settings(_env_file=None)).openapi()["paths"])


def test_every_base_file_is_valid_without_rendering():
    import kubernetes_validate

    for path in sorted((K8S / "base").glob("*.yaml")) + sorted((K8S / "overlays" / "gpu").glob("*-*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            for version in KUBERNETES_VERSIONS:
                kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_catches_a_wrong_field():
    import kubernetes_validate

    doc = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())
    broken = copy.deepcopy(doc)
    broken["spec"]["replicaz"] = broken["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_and_validates(overlay):
    import kubernetes_validate

    docs = render(overlay)
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap",
            "PersistentVolumeClaim"} <= {d["kind"] for d in docs}
    for doc in docs:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ports_and_settings_are_what_the_service_serves_and_reads(overlay):
    docs = render(overlay)
    settings = settings_of(docs)
    assert set(settings) <= {f"FACEGEN_{name.upper()}" for name in Settings.model_fields}, "unknown FACEGEN_ setting"
    served = Settings(_env_file=None, **{k.removeprefix("FACEGEN_").lower(): v for k, v in settings.items()})
    deployment = one(docs, "Deployment")
    spec, c = deployment["spec"]["template"]["spec"], container(deployment)
    assert c["command"] == ["python", "-m", "service"]
    assert c["envFrom"][0]["configMapRef"]["name"] == one(docs, "ConfigMap")["metadata"]["name"]
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
    assert port == served.port and served.host == "0.0.0.0"
    app_routes = routes()
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] in app_routes and c[probe]["httpGet"]["port"] == "http"
    service = one(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()

    # Stopping: the pause before SIGTERM plus the service's own grace fit inside the kubelet's grace.
    pause = float(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert spec["terminationGracePeriodSeconds"] > pause + served.shutdown_grace_s
    assert deployment["spec"]["replicas"] == 2 and one(docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] >= 1
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]

    # Non-root, read-only root filesystem, a writable /tmp, the checkpoint root read-only where the service reads it.
    assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["readOnlyRootFilesystem"] and not c["securityContext"]["allowPrivilegeEscalation"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    ckpt = mounts[str(served.checkpoint_root)]
    assert ckpt["readOnly"] and volumes[ckpt["name"]]["persistentVolumeClaim"]["readOnly"]
    claim = volumes[ckpt["name"]]["persistentVolumeClaim"]["claimName"]
    pvc = [p for p in by_kind(docs, "PersistentVolumeClaim") if p["metadata"]["name"] == claim]
    assert pvc and "ReadWriteMany" in pvc[0]["spec"]["accessModes"]


@needs_kubectl
def test_the_gpu_overlay_asks_for_gpus_and_trains_into_the_volume_the_replicas_read():
    docs = render("gpu")
    assert settings_of(docs)["FACEGEN_DEVICE"] == "cuda"
    deployment = one(docs, "Deployment")
    assert container(deployment)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container(deployment)["image"].endswith(":gpu")
    job = one(docs, "Job")["spec"]["template"]["spec"]
    trainer = job["containers"][0]
    assert trainer["command"][0] == "torchrun" and trainer["command"][-2:] == ["-m", "trainer"]
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == "1"
    args = train_parser().parse_args(trainer["args"])  # the arguments the trainer accepts
    mounts = {m["mountPath"]: m["name"] for m in trainer["volumeMounts"]}
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in job["volumes"]}
    service_claim = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName")
                     for v in deployment["spec"]["template"]["spec"]["volumes"]}["checkpoints"]
    assert claims[mounts[str(args.checkpoints)]] == service_claim  # publishes where the replicas read
    assert str(args.data).startswith(tuple(mounts))


@needs_kubectl
def test_the_cpu_overlay_has_no_gpu_and_no_job():
    docs = render("cpu")
    assert not by_kind(docs, "Job")
    assert "nvidia.com/gpu" not in container(one(docs, "Deployment"))["resources"]["limits"]
    assert settings_of(docs)["FACEGEN_DEVICE"] == "cpu"


def test_readme_applies_the_overlays_that_exist():
    readme = (ROOT / "README.md").read_text()
    applied = [line for line in readme.splitlines() if "kubectl apply -k" in line]
    assert applied
    for line in applied:
        path = shlex.split(line.split("kubectl apply -k", 1)[1])[0]
        assert (ROOT / path / "kustomization.yaml").is_file(), path
