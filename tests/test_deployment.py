"""No Docker engine runs here, so check the deployment files against what the code accepts."""

import fnmatch
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from service.app import create_app
from service.settings import Settings
from trainer.__main__ import SUBCOMMANDS, train_parser
from trainer.config import TrainConfig, served_store

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_VERSIONS = {"ae": 5, "vae": 7, "gan": 6}  # checkpoints/<name>/<version>, tracked in git: one per model
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
    assert "ports" not in service and service["expose"] == [env["FACEGEN_PORT"]]  # no host port: --scale works
    assert env["FACEGEN_HOST"] == "0.0.0.0"
    probe = " ".join(service["healthcheck"]["test"])
    path = re.search(r"127\.0\.0\.1:(\d+)(/\w+)", probe)
    assert path.group(1) == env["FACEGEN_PORT"] and path.group(2) == "/readyz"
    assert "/readyz" in create_app(Settings(_env_file=None)).openapi()["paths"]
    assert "checkpoints:/checkpoints:ro" in service["volumes"]
    assert service["restart"] == "unless-stopped"


def seconds(duration: str) -> float:
    return float(duration.removesuffix("s"))


def test_replicas_sit_behind_nginx_with_the_same_health_semantics():
    services = compose()["services"]
    lb, service = services["lb"], services["service"]
    env = service["environment"]
    assert lb["ports"][0].rsplit(":", 1)[1] == "80"
    assert lb["depends_on"]["service"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(lb["healthcheck"]["test"])  # ready only when a replica behind it is
    source, target = lb["volumes"][0].split(":")[:2]
    conf = (ROOT / source).read_text()
    assert target == "/etc/nginx/conf.d/default.conf"
    assert re.search(rf"set \$replicas service:{env['FACEGEN_PORT']};", conf) and "proxy_pass http://$replicas;" in conf
    assert re.search(r"proxy_next_upstream error", conf)  # a closed replica's GET goes to another one
    settings = Settings(_env_file=None, **{k.removeprefix("FACEGEN_").lower(): v for k, v in env.items() if "${" not in str(v)})
    assert int(re.search(r"client_max_body_size (\d+)m;", conf).group(1)) * 2**20 > settings.max_upload_bytes
    assert float(re.search(r"proxy_read_timeout (\d+)s;", conf).group(1)) > settings.request_timeout_s
    assert seconds(service["stop_grace_period"]) > settings.shutdown_grace_s


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (.ci/run installs it)")
def test_the_nginx_config_is_accepted_by_nginx(tmp_path):
    conf = ROOT / "deploy" / "nginx" / "facegen.conf"
    main = tmp_path / "nginx.conf"
    main.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
                    f"http {{\n client_body_temp_path {tmp_path};\n include {conf};\n}}\n")
    r = subprocess.run(["nginx", "-t", "-c", str(main), "-p", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


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
