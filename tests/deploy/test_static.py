"""Static checks of the deployment files: Dockerfile, compose, Kubernetes and KServe manifests."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import crd
from tests.deploy.kustomize import render
from tests.deploy.tools import compose_binary, executable

ROOT = Path(__file__).resolve().parents[2]
KSERVE_CRDS = ROOT / "tests" / "fixtures" / "kserve"
K8S_OVERLAYS = [ROOT / "deploy" / "kubernetes" / "overlays" / o for o in ("cpu", "gpu")]
KSERVE_OVERLAYS = [ROOT / "deploy" / "kserve" / "overlays" / o for o in ("cpu", "gpu")]
KSERVE_SCHEMAS = {
    "ServingRuntime": ("serving.kserve.io_servingruntimes.yaml", "v1alpha1"),
    "InferenceService": ("serving.kserve.io_inferenceservices.yaml", "v1beta1"),
}


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def _by_kind(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["kind"]: r for r in resources}


# --- Dockerfile -------------------------------------------------------------------------------


def test_hadolint_passes() -> None:
    result = _run(executable("hadolint"), "--failure-threshold", "info", str(ROOT / "Dockerfile"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    # Guards against a linter that passes everything (wrong binary, config swallowing rules).
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN cd /tmp && apt-get install curl\nCMD python3 app.py\n")
    result = _run(executable("hadolint"), str(bad))
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image


def test_runtime_stage_is_non_root_exec_form_with_healthcheck() -> None:
    stages = _stages((ROOT / "Dockerfile").read_text())
    runtime = "\n".join(stages["runtime"])
    assert "USER 10001" in runtime
    assert "HEALTHCHECK" in runtime
    assert "/v2/health/ready" in runtime
    assert 'ENTRYPOINT ["weightserve", "serve"]' in runtime
    # Serving needs onnxruntime, never torch or a compiler.
    assert "torch" not in runtime
    # The JSON request reader is compiled where the project is installed (the builders), and the
    # images that ship copy the venv without the compiler or Python's headers.
    for shipped in ("runtime", "trainer", "gpu"):
        for word in ("gcc", "build-essential", "python3-dev"):
            assert word not in "\n".join(stages[shipped]), (shipped, word)
    assert "gcc" in "\n".join(stages["source"])  # builder and trainer-builder start from it
    gpu_builder = "\n".join(stages["gpu-builder"])
    assert "gcc" in gpu_builder
    assert "python3-dev" in gpu_builder
    assert "onnxruntime-gpu" in gpu_builder
    # A plain `docker build .` gives the CPU runtime (the last stage).
    assert list(stages)[-1] == "cpu"
    assert stages["cpu"][0] == "FROM runtime AS cpu"


def _stages(dockerfile: str) -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in dockerfile.splitlines():
        if line.startswith("#"):
            continue
        if line.startswith("FROM "):
            current = stages.setdefault(line.split(" AS ")[-1].strip(), [])
        current.append(line)
    return stages


# --- docker compose ---------------------------------------------------------------------------


def _compose_config(*profiles: str) -> dict[str, Any]:
    argv = [compose_binary(), "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml")]
    for profile in profiles:
        argv += ["--profile", profile]
    result = _run(*argv, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_compose_config_is_valid_for_every_profile() -> None:
    config = _compose_config("train", "monitoring", "gpu")
    assert set(config["services"]) == {"server", "lb", "trainer", "prometheus", "server-gpu"}


def test_compose_default_profile_runs_replicas_behind_the_balancer() -> None:
    services = _compose_config()["services"]
    assert set(services) == {"server", "lb"}
    server, lb = services["server"], services["lb"]
    assert server["deploy"]["replicas"] >= 2
    assert "ports" not in server  # reachable only through the balancer
    assert "/v2/health/ready" in " ".join(server["healthcheck"]["test"])
    assert lb["depends_on"]["server"]["condition"] == "service_healthy"
    assert server["environment"]["WEIGHTSERVE_POLL_INTERVAL_S"]
    mounts = {(v["source"], v["target"]): v.get("read_only", False) for v in server["volumes"]}
    assert mounts[("models", "/models")] is True


def test_compose_trainer_writes_the_volume_the_servers_read() -> None:
    services = _compose_config("train")["services"]
    trainer = services["trainer"]
    assert trainer["build"]["target"] == "trainer"
    [volume] = trainer["volumes"]
    assert (volume["source"], volume["target"], volume.get("read_only", False)) == ("models", "/models", False)


def test_compose_gpu_profile_reserves_nvidia_devices() -> None:
    gpu = _compose_config("gpu")["services"]["server-gpu"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert gpu["build"]["target"] == "gpu"
    assert "server" in gpu["networks"]["default"]["aliases"]


def test_compose_rejects_an_invalid_file(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  s:\n    image: x\n    deploy:\n      replicas: many\n")
    result = _run(compose_binary(), "-f", str(bad), "config", "-q")
    assert result.returncode != 0


# --- Kubernetes -------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", K8S_OVERLAYS, ids=lambda p: p.name)
def test_kubernetes_overlay_passes_strict_validation(overlay: Path, tmp_path: Path) -> None:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(render(overlay)))
    result = _run(executable("kubernetes-validate"), "--strict", "--quiet", str(rendered))
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validate_rejects_unknown_fields(tmp_path: Path) -> None:
    resources = render(K8S_OVERLAYS[0])
    _by_kind(resources)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(resources))
    result = _run(executable("kubernetes-validate"), "--strict", "--quiet", str(rendered))
    assert result.returncode != 0


@pytest.mark.parametrize("overlay", K8S_OVERLAYS, ids=lambda p: p.name)
def test_kubernetes_overlay_has_probes_drain_budget_and_autoscaler(overlay: Path) -> None:
    kinds = _by_kind(render(overlay))
    assert set(kinds) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    assert "preStop" in container["lifecycle"]
    drain = next(int(e["value"]) for e in container["env"] if e["name"] == "WEIGHTSERVE_DRAIN_TIMEOUT_S")
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain
    labels = kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert kinds["Service"]["spec"]["selector"] == labels
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    target = kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", kinds["Deployment"]["metadata"]["name"])
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_gpu_overlay_requests_a_gpu_and_the_gpu_image() -> None:
    cpu = _by_kind(render(K8S_OVERLAYS[0]))["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    gpu = _by_kind(render(K8S_OVERLAYS[1]))["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["image"].endswith("-gpu")
    assert not cpu["image"].endswith("-gpu")
    env = {e["name"]: e["value"] for e in gpu["env"]}
    assert env["WEIGHTSERVE_PROVIDERS"].startswith('["CUDAExecutionProvider"')


# --- KServe -----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", KSERVE_OVERLAYS, ids=lambda p: p.name)
def test_kserve_resources_match_their_crd_schemas(overlay: Path) -> None:
    resources = render(overlay)
    assert sorted(r["kind"] for r in resources) == ["InferenceService", "ServingRuntime"]
    for resource in resources:
        crd_file, version = KSERVE_SCHEMAS[resource["kind"]]
        assert resource["apiVersion"] == f"serving.kserve.io/{version}"
        schema = crd.load_schema(KSERVE_CRDS / crd_file, version)
        assert crd.errors(resource, schema) == []


def test_kserve_schema_check_rejects_unknown_fields() -> None:
    runtime = _by_kind(render(KSERVE_OVERLAYS[0]))["ServingRuntime"]
    runtime["spec"]["protocolVersion"] = ["v2"]  # the real field is protocolVersions
    schema = crd.load_schema(KSERVE_CRDS / KSERVE_SCHEMAS["ServingRuntime"][0], "v1alpha1")
    assert any("protocolVersion" in e for e in crd.errors(runtime, schema))


@pytest.mark.parametrize("overlay", KSERVE_OVERLAYS, ids=lambda p: p.name)
def test_inference_service_uses_the_runtime_for_onnx_over_v2(overlay: Path) -> None:
    kinds = _by_kind(render(overlay))
    runtime, service = kinds["ServingRuntime"], kinds["InferenceService"]
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] == "v2"
    assert "v2" in runtime["spec"]["protocolVersions"]
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] == "onnx"
    assert "onnx" in formats
    [container] = runtime["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["WEIGHTSERVE_REPOSITORY"] == "/mnt/models"
    assert {p["containerPort"] for p in container["ports"]} == {int(env["WEIGHTSERVE_PORT"])}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


# --- the renderer itself ----------------------------------------------------------------------


@pytest.mark.parametrize("overlay", K8S_OVERLAYS + KSERVE_OVERLAYS, ids=lambda p: f"{p.parts[-3]}-{p.name}")
def test_renderer_matches_kubectl_kustomize(overlay: Path) -> None:
    kubectl = executable("kubectl")
    result = _run(kubectl, "kustomize", str(overlay))
    assert result.returncode == 0, result.stderr
    theirs = [d for d in yaml.safe_load_all(result.stdout) if d]

    def key(r: dict[str, Any]) -> tuple[str, str]:
        return r["kind"], r["metadata"]["name"]

    assert sorted(render(overlay), key=key) == sorted(theirs, key=key)
