"""Static checks of the Docker Compose demo (no Docker needed).

``docker-compose.yaml`` is parsed with PyYAML and interpolated the way ``docker compose`` does
with an empty environment (every ``${VAR:-default}`` takes its default), then checked for the
things that break a Compose deployment only at ``docker compose up`` time: missing files,
dangling ``depends_on``, health conditions on services without a healthcheck, connections
Airflow cannot parse, a worker that cannot be scaled.
"""

from __future__ import annotations

import gzip
import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / "docker" / "Dockerfile.dockerignore"
MINIO_INIT = REPO_ROOT / "docker" / "minio-init.sh"
SAMPLE = REPO_ROOT / "docker" / "sample" / "providers.jsonl.gz"

AIRFLOW_IMAGE = "apache/airflow:3.3.2"
COMMON_ANCHOR = "x-airflow-common"
EXPECTED_SERVICES = {
    "postgres",
    "warehouse",
    "redis",
    "minio",
    "minio-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
}
ONE_SHOT_SERVICES = {"airflow-init", "minio-init"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
MINIO_ENDPOINT = "http://minio:9000"

# Compose interpolation: $$, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR:+alt}, $VAR.
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Interpolate one string like ``docker compose`` does with ``env`` (default: empty)."""
    env = env or {}

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        name = match["braced"]
        if name is None:
            near = value[max(0, match.start() - 40) : match.end() + 40]
            raise ValueError(f"invalid interpolation (use $$ for a literal $) near {near!r}")
        op, arg = match["op"], match["arg"] or ""
        current = env.get(name)
        is_set = current is not None and (current != "" or op is None or not op.startswith(":"))
        if op is None:
            return current or ""
        if op.endswith("-"):
            return current if is_set and current is not None else arg
        if op.endswith("+"):
            return arg if is_set else ""
        if not is_set:  # ? / :?
            raise ValueError(f"required variable {name} is not set: {arg}")
        return current or ""

    return _INTERPOLATION.sub(substitute, value)


def interpolate_tree(node: Any) -> Any:
    if isinstance(node, str):
        return interpolate(node)
    if isinstance(node, dict):
        return {key: interpolate_tree(value) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(item) for item in node]
    return node


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    """The compose file, merge keys resolved and interpolated with default values."""
    raw = yaml.safe_load(compose_text)
    assert isinstance(raw, dict)
    return interpolate_tree(raw)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def airflow_services(services: dict[str, dict[str, Any]]) -> list[str]:
    return [name for name in services if name.startswith("airflow-")]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # short syntax: plain start order
        return {name: {"condition": "service_started"} for name in deps}
    return deps


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """``(host source, container target)`` of every bind mount (short and long syntax)."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        source, _, rest = volume.partition(":")
        if rest and source.startswith((".", "/", "~")):
            mounts.append((source, rest.split(":", 1)[0]))
    return mounts


def named_volumes(service: dict[str, Any]) -> list[str]:
    names = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type", "volume") == "volume" and volume.get("source"):
                names.append(volume["source"])
            continue
        source, _, rest = volume.partition(":")
        if rest and not source.startswith((".", "/", "~")):
            names.append(source)
    return names


def host_path(source: str) -> Path:
    assert not source.startswith(("/", "~")), f"{source}: host paths must be relative to the repository"
    return (REPO_ROOT / source).resolve()


def container_to_host(service: dict[str, Any], container_path: str) -> Path | None:
    """The host file behind ``container_path`` if it lies in one of the service's bind mounts."""
    target_path = PurePosixPath(container_path)
    for source, target in bind_mounts(service):
        if target_path == PurePosixPath(target) or PurePosixPath(target) in target_path.parents:
            return host_path(source) / target_path.relative_to(target)
    return None


def url_host(url: str) -> str | None:
    return urlsplit(url.split("+", 1)[-1] if url.startswith("db+") else url).hostname


# --------------------------------------------------------------------------------------------- #


def test_interpolation_helper() -> None:
    assert interpolate("${A:-x}/$${B} $$ ${C-}") == "x/${B} $ "
    assert interpolate("${A:-x}", {"A": "y"}) == "y"
    assert interpolate("${A:-x}", {"A": ""}) == "x"
    assert interpolate("${A-x}", {"A": ""}) == ""
    with pytest.raises(ValueError, match="required"):
        interpolate("${A:?set A}")
    with pytest.raises(ValueError, match="invalid"):
        interpolate("echo $(id -u)")


def test_compose_file_parses_and_interpolates(compose: dict[str, Any]) -> None:
    assert set(compose) >= {"services", "volumes", COMMON_ANCHOR}
    assert "version" not in compose, "the top-level 'version' key is obsolete"


def test_expected_services_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = EXPECTED_SERVICES - set(services)
    assert not missing, f"missing services: {sorted(missing)}"


def test_airflow_services_use_common_anchor(compose_text: str, services: dict[str, dict[str, Any]]) -> None:
    # The YAML node graph: `<<: *airflow-common` makes the merge value the very anchor node.
    root = yaml.compose(compose_text, Loader=yaml.SafeLoader)
    top = {key.value: value for key, value in root.value}
    anchor = top[COMMON_ANCHOR]
    service_nodes = {key.value: value for key, value in top["services"].value}
    for name in airflow_services(services):
        merged = [value for key, value in service_nodes[name].value if key.value == "<<"]
        merged_nodes = [node for value in merged for node in (value.value if value.id == "sequence" else [value])]
        assert any(node is anchor for node in merged_nodes), f"{name} does not merge <<: *airflow-common"

    common = interpolate_tree(yaml.safe_load(compose_text)[COMMON_ANCHOR])
    assert common["build"] == {"context": ".", "dockerfile": "docker/Dockerfile"}
    common_env = environment(common)
    for name in airflow_services(services):
        service = services[name]
        assert service.get("build") == common["build"], name
        assert service.get("image") == common["image"], name
        env = environment(service)
        missing = sorted(set(common_env) - set(env))
        assert not missing, f"{name} lacks common environment keys {missing}"
        changed = sorted(key for key in common_env if env[key] != common_env[key])
        assert not changed, f"{name} overrides common environment keys {changed}"


def test_metadata_db_and_warehouse_are_separate(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["airflow-scheduler"])
    metadata_host = url_host(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert metadata_host == "postgres"
    assert url_host(env["AIRFLOW__CELERY__RESULT_BACKEND"]) == "postgres"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    warehouse_host = json.loads(env["AIRFLOW_CONN_POSTGRES_DEFAULT"])["host"]
    assert warehouse_host == "warehouse"
    assert warehouse_host != metadata_host
    for name in ("postgres", "warehouse"):
        assert services[name]["image"].startswith("postgres:16"), name
    assert set(named_volumes(services["postgres"])).isdisjoint(named_volumes(services["warehouse"]))
    assert environment(services["warehouse"])["POSTGRES_DB"] == "warehouse"


def test_celery_executor_redis_broker_and_scalable_worker(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["airflow-worker"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    broker = env["AIRFLOW__CELERY__BROKER_URL"]
    assert broker.startswith("redis://")
    assert url_host(broker) == "redis"
    assert services["redis"]["image"].startswith("redis:")

    worker = services["airflow-worker"]
    command = worker["command"]
    assert "celery worker" in (" ".join(command) if isinstance(command, list) else command)
    for key in ("container_name", "ports", "hostname"):
        assert key not in worker, f"airflow-worker must not set {key} (breaks --scale airflow-worker=N)"
    for name, service in services.items():
        if name.startswith("airflow-") or service.get("build"):
            assert "container_name" not in service, f"{name}: no container_name"


def test_execution_api_points_at_apiserver(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["airflow-worker"])
    url = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (url.hostname, url.port, url.path) == ("airflow-apiserver", 8080, "/execution/")
    assert "8080:8080" in [str(port) for port in services["airflow-apiserver"]["ports"]]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"], "all components need the same non-empty JWT secret"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["AIRFLOW__CORE__FERNET_KEY"] == ""


def test_depends_on_targets_conditions_and_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        raw = service.get("depends_on")
        assert raw is None or isinstance(raw, dict), f"{name}: use long-syntax depends_on with conditions"
        for target, spec in depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert target != name
            condition = spec.get("condition")
            assert condition in CONDITIONS, f"{name} -> {target}: invalid condition {condition!r}"
            assert condition != "service_started", f"{name} -> {target}: wait for healthy/completed"
            target_service = services[target]
            if condition == "service_healthy":
                healthcheck = target_service.get("healthcheck")
                assert healthcheck, f"{name} waits for {target} to be healthy but it has no healthcheck"
                assert healthcheck.get("test"), target
                assert not healthcheck.get("disable"), target
            else:
                assert target in ONE_SHOT_SERVICES, f"{name} waits for {target} to complete"
                assert target_service.get("restart", "no") in ("no", "on-failure"), target

    # No cycles (compose would refuse to start).
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == "done":
            return
        assert state.get(node) != "active", f"depends_on cycle: {' -> '.join([*path, node])}"
        state[node] = "active"
        for target in depends_on(services[node]):
            visit(target, [*path, node])
        state[node] = "done"

    for name in services:
        visit(name, [])


def test_service_dependencies(services: dict[str, dict[str, Any]]) -> None:
    for name in airflow_services(services):
        deps = depends_on(services[name])
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        if name not in ("airflow-init", "airflow-cli"):
            assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
    worker = depends_on(services["airflow-worker"])
    assert worker["airflow-apiserver"]["condition"] == "service_healthy"
    assert worker["warehouse"]["condition"] == "service_healthy"
    assert worker["minio-init"]["condition"] == "service_completed_successfully"
    assert depends_on(services["minio-init"])["minio"]["condition"] == "service_healthy"
    for name in ("postgres", "warehouse", "redis", "minio", "airflow-apiserver"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} needs a healthcheck"
    assert "/api/v2/version" in " ".join(services["airflow-apiserver"]["healthcheck"]["test"])


def test_host_paths_exist(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        build = service.get("build")
        if build is not None:
            build = {"context": build} if isinstance(build, str) else build
            context = host_path(build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context} missing"
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        env_files = service.get("env_file") or []
        for env_file in [env_files] if isinstance(env_files, str | dict) else env_files:
            path = env_file["path"] if isinstance(env_file, dict) else env_file
            required = env_file.get("required", True) if isinstance(env_file, dict) else True
            assert not required or host_path(path).is_file(), f"{name}: env_file {path} missing"
        for source, _target in bind_mounts(service):
            assert host_path(source).exists(), f"{name}: bind mount source {source} missing"
        for volume in named_volumes(service):
            assert volume in declared_volumes, f"{name}: named volume {volume} not declared"


def test_mounted_scripts_and_files_exist(services: dict[str, dict[str, Any]]) -> None:
    """Container paths used in entrypoint/command/environment that come from bind mounts exist."""
    checked = 0
    for name, service in services.items():
        words: list[str] = []
        for key in ("entrypoint", "command"):
            value = service.get(key) or []
            words += value.split() if isinstance(value, str) else [str(item) for item in value]
        words += environment(service).values()
        for word in words:
            if not word.startswith("/"):
                continue
            host = container_to_host(service, word)
            if host is not None:
                assert host.exists(), f"{name}: {word} -> {host} missing"
                checked += 1
    minio_init = services["minio-init"]
    assert "minio/mc" in minio_init["image"]
    assert container_to_host(minio_init, minio_init["entrypoint"][-1]) == MINIO_INIT
    assert container_to_host(minio_init, environment(minio_init)["SAMPLE_FILE"]) == SAMPLE
    assert checked >= 2


def test_no_pip_additional_requirements(compose_text: str) -> None:
    for path in (COMPOSE_FILE, DOCKERFILE, MINIO_INIT):
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in path.read_text(encoding="utf-8"), path


def test_host_ports_are_unique(services: dict[str, dict[str, Any]]) -> None:
    seen: dict[str, str] = {}
    for name, service in services.items():
        for port in service.get("ports") or []:
            published = str(port["published"]) if isinstance(port, dict) else str(port).rsplit(":", 1)[0]
            assert published not in seen, f"host port {published} used by {seen.get(published)} and {name}"
            seen[published] = name


def test_connections_parse_as_airflow_connections(services: dict[str, dict[str, Any]]) -> None:
    from airflow.models.connection import Connection

    env = environment(services["airflow-worker"])
    minio_env = environment(services["minio"])

    aws = Connection.from_json(env["AIRFLOW_CONN_AWS_DEFAULT"], conn_id="aws_default")
    assert aws.conn_type == "aws"
    assert aws.login == minio_env["MINIO_ROOT_USER"]
    assert aws.password == minio_env["MINIO_ROOT_PASSWORD"]
    extra = aws.extra_dejson
    assert extra["endpoint_url"] == MINIO_ENDPOINT
    assert extra["region_name"] == "us-east-1"
    # No config_kwargs: the operator signs with SigV4 itself, and a 4-character "s3v4" in the extra makes
    # Airflow's secrets masker warn "too short" at the top of every task log.
    assert "config_kwargs" not in extra
    assert url_host(extra["endpoint_url"]) in services
    assert environment(services["minio-init"])["MINIO_ENDPOINT"] == MINIO_ENDPOINT

    warehouse_env = environment(services["warehouse"])
    pg = Connection.from_json(env["AIRFLOW_CONN_POSTGRES_DEFAULT"], conn_id="postgres_default")
    assert pg.conn_type == "postgres"
    assert pg.host == "warehouse"
    assert pg.port == 5432
    assert pg.schema == warehouse_env["POSTGRES_DB"]
    assert pg.login == warehouse_env["POSTGRES_USER"]
    assert pg.password == warehouse_env["POSTGRES_PASSWORD"]


# Importing the auth manager module imports starlette's test client, which warns about httpx.
@pytest.mark.filterwarnings("ignore:Using .httpx. with .starlette.testclient.")
def test_airflow_config_env_vars_name_real_options(services: dict[str, dict[str, Any]]) -> None:
    """Every ``AIRFLOW__SECTION__KEY`` is an option Airflow knows (a typo is silently ignored)."""
    from airflow.configuration import conf

    # [celery] belongs to the Celery provider: in the image, not necessarily in this virtualenv.
    provider_sections = {"celery"}
    described = conf.configuration_description
    env = environment(services["airflow-worker"])
    for name in env:
        if not name.startswith("AIRFLOW__"):
            continue
        section, _, option = name.removeprefix("AIRFLOW__").lower().partition("__")
        if section in provider_sections:
            continue
        assert option in described.get(section, {}).get("options", {}), f"{name}: unknown option [{section}] {option}"
    module, _, class_name = env["AIRFLOW__CORE__AUTH_MANAGER"].rpartition(".")
    assert getattr(importlib.import_module(module), class_name).__name__ == "SimpleAuthManager"


def test_simple_auth_admin_user(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["airflow-apiserver"])
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith(".SimpleAuthManager")
    init_env = environment(services["airflow-init"])
    user = init_env["_AIRFLOW_WWW_USER_USERNAME"]
    assert init_env["_AIRFLOW_WWW_USER_PASSWORD"]
    assert f"{user}:admin" in env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(",")
    passwords_dir = str(PurePosixPath(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).parent)
    for name in ("airflow-apiserver", "airflow-init"):
        targets = [volume.split(":")[1] for volume in services[name]["volumes"] if isinstance(volume, str)]
        assert passwords_dir in targets, f"{name} must share the simple auth passwords volume"
    script = " ".join(services["airflow-init"]["command"])
    assert "airflow db migrate" in script
    assert "SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in script
    assert services["airflow-init"]["user"] == "0:0"


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_shell_scripts_have_valid_syntax(services: dict[str, dict[str, Any]]) -> None:
    init_command = services["airflow-init"]["command"]
    assert init_command[0] == "-c"
    subprocess.run(["bash", "-n", "-c", init_command[1]], check=True)
    subprocess.run(["bash", "-n", str(MINIO_INIT)], check=True)
    if shutil.which("sh"):
        subprocess.run(["sh", "-n", str(MINIO_INIT)], check=True)


def test_minio_init_uploads_where_the_dag_reads(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["minio-init"])
    assert env["IMPORT_BUCKET"] == "imports"
    assert env["IMPORT_KEY_PREFIX"] == "imports"
    script = MINIO_INIT.read_text(encoding="utf-8")
    assert "mc mb --ignore-existing" in script
    assert '"demo/${IMPORT_BUCKET}/${IMPORT_KEY_PREFIX}/${day}/providers.jsonl.gz"' in script
    assert "date -u +%Y-%m-%d" in script
    minio = services["minio"]
    assert "--console-address" in minio["command"]
    assert {"9000:9000", "9001:9001"} <= {str(port) for port in minio["ports"]}


def test_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0] == f"FROM {AIRFLOW_IMAGE}"
    assert "COPY requirements.txt /requirements.txt" in instructions
    assert "RUN pip install --no-cache-dir -r /requirements.txt" in instructions
    user_lines = [line for line in instructions if line.startswith("USER ")]
    assert user_lines
    assert user_lines[-1] == "USER airflow"
    assert instructions.index(user_lines[-1]) < instructions.index(
        "RUN pip install --no-cache-dir -r /requirements.txt"
    ), "pip must run as the airflow user"
    copies = [line.split() for line in instructions if line.startswith("COPY ")]
    destinations = {words[-1].rstrip("/"): words[-2].rstrip("/") for words in copies}
    assert destinations["/opt/airflow/plugins"] == "plugins"
    assert destinations["/opt/airflow/dags"] == "dags"
    for source in destinations.values():
        assert (REPO_ROOT / source).exists(), f"COPY source {source} missing from the build context"

    # Installing requirements.txt must not change the image's Airflow version.
    version = AIRFLOW_IMAGE.split(":")[1]
    for line in (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].replace(" ", "")
        if re.split(r"[=<>~!;\[]", requirement, maxsplit=1)[0].lower() == "apache-airflow":
            assert requirement == f"apache-airflow=={version}", f"requirements.txt has {line!r}"

    # The build-context filter must keep what the Dockerfile copies.
    ignore = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()]
    if "*" in ignore:
        for source in destinations.values():
            assert f"!{source}" in ignore, f"{source} is excluded from the build context"


def test_sample_file_is_gzip_json_lines() -> None:
    assert SAMPLE.stat().st_size < 200 * 1024
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as stream:
        lines = [line for line in stream.read().split("\n") if line]
    assert len(lines) >= 100
    records = [json.loads(line) for line in lines]
    assert all(isinstance(record, dict) for record in records)
    required = {"npi", "first_name", "last_name", "specialties", "address", "accepting_new_patients", "bio"}
    assert all(required <= set(record) for record in records)
    assert len({record["npi"] for record in records}) == len(records), "NPIs are unique"
    bios = [record["bio"] for record in records]
    assert any("\\" in bio for bio in bios)
    assert any("\t" in bio for bio in bios)
    assert any(any(ord(char) > 0xFFFF for char in bio) for bio in bios), "some text outside the BMP"
