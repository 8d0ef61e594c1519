"""No Docker engine runs here, so check the deployment files against what the code accepts."""

import fnmatch
import re
import shlex
from pathlib import Path

import pytest
import yaml

from service.app import create_app
from service.settings import Settings
from trainer.__main__ import SUBCOMMANDS, train_parser
from trainer.config import TrainConfig, served_store

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_VERSIONS = {"ae": 3, "vae": 5, "gan": 4}  # checkpoints/<name>/<version>, tracked in git: one per model
BUNDLED = tuple(BUNDLED_VERSIONS)
TRAINER_ENV = {"FACEGEN_CHECKPOINT_ROOT", "FACEGEN_RUNS_DIR", "FACEGEN_TRAIN_CHECKPOINTS"}


def compose(name="docker-compose.yml"):
    return yaml.safe_load((ROOT / name).read_text())


def settings_env_names() -> set[str]:
    return {f"FACEGEN_{name.upper()}" for name in Settings.model_fields}


def test_service_matches_the_settings_and_routes():
    service = compose()["services"]["service"]
    assert service["command"] == ["python", "-m", "service"]
    env = service["environment"]
    assert set(env) <= settings_env_names(), set(env) - settings_env_names()
    Settings(**{k.removeprefix("FACEGEN_").lower(): v for k, v in env.items() if "${" not in str(v)})  # values validate
    published, container = service["ports"][0].rsplit(":", 1)
    assert container == env["FACEGEN_PORT"] and env["FACEGEN_HOST"] == "0.0.0.0"
    probe = " ".join(service["healthcheck"]["test"])
    path = re.search(r"127\.0\.0\.1:(\d+)(/\w+)", probe)
    assert path.group(1) == env["FACEGEN_PORT"] and path.group(2) == "/readyz"
    assert "/readyz" in create_app(Settings(_env_file=None)).openapi()["paths"]
    assert "checkpoints:/checkpoints:ro" in service["volumes"]
    assert service["restart"] == "unless-stopped"


def test_the_trainer_trains_into_its_own_store_and_promotes_into_the_volume_the_service_reads(monkeypatch):
    trainer = compose()["services"]["trainer"]
    assert trainer["profiles"] == ["train"] and trainer["entrypoint"] == ["python", "-m", "trainer"]
    assert "checkpoints:/checkpoints" in trainer["volumes"]  # read-write: promote writes there
    assert set(trainer["environment"]) <= TRAINER_ENV
    for key, value in trainer["environment"].items():
        monkeypatch.setenv(key, value)
    cfg = TrainConfig(model="gan", data="/data/celeba64")
    assert str(cfg.runs_dir) == "/runs" and str(cfg.checkpoints) == "/runs/checkpoints"  # never the served store
    assert str(served_store()) == compose()["services"]["service"]["environment"]["FACEGEN_CHECKPOINT_ROOT"]


def test_gpu_override_reserves_gpus_and_selects_cuda():
    gpu = compose("docker-compose.gpu.yml")["services"]
    for name in ("service", "trainer"):
        devices = gpu[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["service"]["environment"]["FACEGEN_DEVICE"] == "cuda"
    assert Settings(device="cuda", _env_file=None).device == "cuda"


def test_dockerfile_runs_the_documented_commands():
    text = (ROOT / "Dockerfile.gpu").read_text()
    assert 'CMD ["python", "-m", "service"]' in text
    assert re.search(r"HEALTHCHECK .*\n.*/readyz", text)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    env = dict(re.findall(r"(FACEGEN_\w+)=(\S+)", text))
    assert set(env) <= settings_env_names() | TRAINER_ENV
    assert f"EXPOSE {env['FACEGEN_PORT']}" in text
    assert text.index("COPY pyproject.toml") < text.index("COPY models_core")  # dependencies cached first
    assert f"COPY --chown=facegen checkpoints {env['FACEGEN_CHECKPOINT_ROOT']}\n" in text  # the bundled models


def dockerignored(path: str) -> bool:
    """Docker's rule: the last pattern that matches a path (or one of its parents) decides."""
    ignored = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!")
        parts = Path(path).parts
        if any(fnmatch.fnmatch("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def test_the_image_carries_the_bundled_models_but_nothing_trained_locally():
    bundled = [f"checkpoints/{name}/{v:06d}/{file}" for name, v in BUNDLED_VERSIONS.items()
               for file in ("manifest.json", "weights.safetensors")]
    assert all((ROOT / p).is_file() for p in bundled)
    assert not any(dockerignored(p) for p in bundled)
    assert dockerignored(f"checkpoints/gan/{BUNDLED_VERSIONS['gan'] + 1:06d}/weights.safetensors")  # trained here
    assert dockerignored("runs/00001-gan/training_state.safetensors")


def readme_compose_commands() -> list[list[str]]:
    commands = re.findall(r"^docker compose [^\n]*$", (ROOT / "README.md").read_text(), re.M)
    assert commands, "README documents no docker compose commands"
    return [shlex.split(c.split("#")[0]) for c in commands]


def test_readme_compose_commands_name_real_services_and_valid_trainer_arguments():
    services = compose()["services"]
    for argv in readme_compose_commands():
        if "run" in argv:
            i = argv.index("run") + 1
            while argv[i].startswith("--"):
                i += 1
            assert argv[i] in services, argv
            args = argv[i + 1 :]
            if argv[i] == "trainer" and args and args[0] not in SUBCOMMANDS:
                train_parser().parse_args(args)
        for f in [argv[j + 1] for j, a in enumerate(argv) if a == "-f"]:
            assert (ROOT / f).is_file(), f


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.gpu.yml"])
def test_compose_files_parse(name):
    assert "services" in compose(name)
