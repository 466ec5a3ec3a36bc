"""docker-compose.yml, .env.example and the Dockerfile, checked without Docker.

The compose file must start the production runtime the README describes, use only
settings that exist, and give the processes an environment that
``Settings(env="production")`` accepts.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet

from hotline.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
HOTLINE_SERVICES = ("migrate", "api", "worker", "beat")
SETTING_NAMES = {f"HOTLINE_{name.upper()}" for name in Settings.model_fields}
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return dict(compose["services"])


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable substitution, for the forms this file uses."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        present = env.get(name)
        if operator in (":-", ":?") and not present:
            present = None
        if present is not None:
            return present
        if operator and operator.endswith("?"):
            raise AssertionError(f"${{{name}}} is required: {argument}")
        return argument or ""

    return VARIABLE.sub(substitute, value)


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def test_the_services_exist(services: dict[str, Any]) -> None:
    assert {"postgres", "redis", *HOTLINE_SERVICES} <= set(services)


def test_startup_order(services: dict[str, Any]) -> None:
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert services["migrate"].get("restart") == "no"


def test_commands(services: dict[str, Any]) -> None:
    assert command_of(services["migrate"]) == ["hotline", "db", "upgrade"]
    assert command_of(services["worker"])[:4] == ["celery", "-A", "hotline.worker", "worker"]
    beat = command_of(services["beat"])
    assert beat[:4] == ["celery", "-A", "hotline.worker", "beat"]
    assert "--schedule" in beat
    assert command_of(services["api"]) == []  # the image's uvicorn command
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])


def test_backing_services(services: dict[str, Any]) -> None:
    postgres, redis = services["postgres"], services["redis"]
    assert str(postgres["image"]).startswith("postgres:16")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert str(redis["image"]).startswith("redis:7")
    assert command_of(redis)[1:] == ["--save", "", "--appendonly", "no"]
    assert "ping" in redis["healthcheck"]["test"]
    # Neither is reachable from outside the compose network.
    assert "ports" not in postgres
    assert "ports" not in redis


def test_one_beat(services: dict[str, Any]) -> None:
    beat = services["beat"]
    assert beat.get("deploy", {}).get("replicas", 1) == 1
    assert "scale" not in beat


def test_processes_that_handle_content_write_no_core_file(services: dict[str, Any]) -> None:
    # A worker hashes fetched media and the api's safe view decodes it: a crash in a
    # native decoder must not leave the bytes on disk.
    for name in ("api", "worker"):
        assert services[name]["ulimits"]["core"] == 0, name


def test_only_settings_that_exist() -> None:
    for path in (COMPOSE, ENV_EXAMPLE):
        used = set(re.findall(r"\bHOTLINE_[A-Z0-9_]+", path.read_text(encoding="utf-8")))
        unknown = used - SETTING_NAMES
        assert not unknown, f"{path.name} uses variables that are not settings: {unknown}"


def test_secrets_are_required(compose: dict[str, Any]) -> None:
    environment = compose["x-hotline-env"]
    assert re.search(r"\$\{HOTLINE_CONTACT_KEYS:\?", environment["HOTLINE_CONTACT_KEYS"])
    assert re.search(r"\$\{POSTGRES_PASSWORD:\?", environment["HOTLINE_DATABASE_URL"])
    with pytest.raises(AssertionError, match="HOTLINE_CONTACT_KEYS"):
        interpolate(environment["HOTLINE_CONTACT_KEYS"], {})


def test_production_settings_accept_the_compose_environment(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    dot_env = {
        "POSTGRES_PASSWORD": "pw",
        "HOTLINE_CONTACT_KEYS": Fernet.generate_key().decode(),
        "HOTLINE_STAFF_KEYS": Fernet.generate_key().decode(),
    }
    for name in HOTLINE_SERVICES:
        environment = services[name]["environment"]
        assert environment["HOTLINE_ENV"] == "production", name
        for variable in list(os.environ):
            if variable.startswith("HOTLINE_"):
                monkeypatch.delenv(variable)
        for variable, value in environment.items():
            monkeypatch.setenv(variable, interpolate(str(value), dot_env))
        settings = Settings()
        assert settings.env == "production"
        assert settings.database_url.startswith("postgresql+psycopg://hotline:pw@postgres:5432/")
        assert settings.broker_url.startswith("redis://redis:")
        assert settings.redis_url.startswith("redis://redis:")
        assert settings.broker_url != settings.redis_url


def test_env_example_is_usable(services: dict[str, Any]) -> None:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    names = {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}
    assert {"POSTGRES_PASSWORD", "HOTLINE_CONTACT_KEYS", "HOTLINE_TRUSTED_PROXIES"} <= names
    dockerignore = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ".env" in dockerignore, ".env holds the secrets and must stay out of the image"


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user, "the image runs as root"
    assert user[-1] not in ("root", "0")
    cmd = re.findall(r"^CMD\s+(.+)$", text, re.M)[-1]
    for flag in ("hotline.web:create_app", "--factory", "--no-proxy-headers", "--no-access-log"):
        assert flag in cmd
    # hotline.migrate looks for <repo>/migrations next to the package: it must be in the
    # image, and the package must run from there (editable install in /app).
    assert "migrations" not in [
        line.strip().strip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
    ]
    assert re.search(r"pip install .*-e \.", text)


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
def test_docker_compose_config(tmp_path: Path) -> None:
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, check=False, timeout=30
    )
    if probe.returncode != 0:
        pytest.skip("no docker compose plugin")
    env = {
        **os.environ,
        "POSTGRES_PASSWORD": "pw",
        "HOTLINE_CONTACT_KEYS": Fernet.generate_key().decode(),
    }
    result = subprocess.run(
        [
            "docker",
            "compose",
            "--project-directory",
            str(REPO),
            "-f",
            str(COMPOSE),
            "config",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
