"""The Helm values in deploy/helm/ agree with the code they deploy (issue #13; parsed, nothing started).

- Dagster chart: the code location is the module pyproject.toml and workspace.yaml name (importable
  as named), runs are launched by the Kubernetes run launcher and queued by the daemon, the instance
  is an external PostgreSQL with no password in the file, every variable given to the code is one
  ``settings.py`` reads (and the whole set loads as valid settings), secrets come from Secrets, and the
  data folder with the adapter registry is a shared volume mounted exactly where HYBRID_DATA_DIR
  points, in the code server and in every run pod.
- Weaviate chart: at least as many nodes as the replication factor the code asks for, raft voters an
  odd number within them, the REST and gRPC services on the ports WEAVIATE_URL / WEAVIATE_GRPC_URL
  use, API-key auth with the key from a Secret and no anonymous access, the version the project tests.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import pytest
import yaml

from hybrid_assets.settings import PROJECT_ROOT, Settings, load_settings

HELM = PROJECT_ROOT / "deploy" / "helm"
SETTINGS_SOURCE = PROJECT_ROOT / "hybrid_assets" / "settings.py"


def load(name: str) -> dict:
    return yaml.safe_load((HELM / name).read_text())


@pytest.fixture(scope="module")
def dagster() -> dict:
    return load("dagster-values.yaml")


@pytest.fixture(scope="module")
def weaviate() -> dict:
    return load("weaviate-values.yaml")


@pytest.fixture(scope="module")
def code_location(dagster) -> dict:
    user = dagster["dagster-user-deployments"]
    assert user["enabled"], "the user-code deployments are off: no code location"
    (deployment,) = user["deployments"]
    return deployment


def plain_env(deployment: dict) -> dict[str, str]:
    """name -> value of the variables set in the file (a list of {name, value}, as the chart takes)."""
    assert isinstance(deployment["env"], list), "env as a list: the chart then passes it to run pods too"
    return {item["name"]: str(item["value"]) for item in deployment["env"]}


def variables_settings_reads() -> set[str]:
    return set(re.findall(r'"((?:HYBRID|WEAVIATE)_[A-Z0-9_]+)"', SETTINGS_SOURCE.read_text()))


@pytest.fixture
def deployed_settings(code_location, monkeypatch) -> Settings:
    """The settings a pod of the code location computes from the file's variables (and nothing else)."""
    for name in variables_settings_reads():
        monkeypatch.delenv(name, raising=False)
    for name, value in plain_env(code_location).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HYBRID_ENV_FILE", str(PROJECT_ROOT / "no-such-env-file"))
    return load_settings()


def test_each_file_opens_with_where_its_keys_come_from():
    for name, source in (("dagster-values.yaml", "helm/dagster/"), ("weaviate-values.yaml", "weaviate/values.yaml")):
        header = (HELM / name).read_text().split("\n\n", 1)[0]
        assert all(line.startswith("#") for line in header.splitlines()), name
        assert source in header and "test_deploy_values.py" in header, name


def test_the_code_location_is_the_project_module(code_location):
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    workspace = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())
    module = pyproject["tool"]["dagster"]["module_name"]
    assert workspace["load_from"][0]["python_module"]["module_name"] == module
    args = code_location["dagsterApiGrpcArgs"]
    flag = next(i for i, arg in enumerate(args) if arg in ("-m", "--module-name"))
    assert args[flag + 1] == module == "hybrid_assets.definitions"
    assert importlib.util.find_spec(module) is not None, f"{module} is not importable"
    assert code_location["image"]["tag"] not in (None, "", "latest"), "runs need a unique image tag"
    assert isinstance(code_location["port"], int)


def test_runs_are_launched_as_kubernetes_jobs_and_queued_by_the_daemon(dagster, code_location):
    launcher = dagster["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert set(launcher["config"]) == {"k8sRunLauncher"}
    coordinator = dagster["dagsterDaemon"]["runCoordinator"]
    assert dagster["dagsterDaemon"]["enabled"] and coordinator["enabled"]
    assert coordinator["type"] == "QueuedRunCoordinator"
    assert coordinator["config"]["queuedRunCoordinator"]["maxConcurrentRuns"] >= 1
    # the run pods get the code location's env, secrets and volumes (the chart's container context)
    assert code_location["includeConfigInLaunchedRuns"]["enabled"] is True
    # the image the run pods use can build that instance: dagster-k8s, of dagster-postgres's release
    pins = dict(re.findall(r"^([\w-]+)==(\S+)", (PROJECT_ROOT / "requirements.txt").read_text(), re.M))
    k8s = dict(re.findall(r"^([\w-]+)==(\S+)", (PROJECT_ROOT / "deploy" / "requirements-k8s.txt").read_text(), re.M))
    assert k8s["dagster-k8s"] == pins["dagster-postgres"]


def test_the_instance_is_an_external_postgres_without_a_password_in_the_file(dagster):
    postgres = dagster["postgresql"]
    assert postgres["enabled"] is False and postgres["postgresqlHost"]
    assert not postgres.get("postgresqlPassword"), "the password belongs in the Secret dagster-postgresql-secret"
    assert dagster["generatePostgresqlPasswordSecret"] is False
    # the same driver as deploy/dagster-postgres.yaml, i.e. the one pinned in requirements.txt
    local = yaml.safe_load((PROJECT_ROOT / "deploy" / "dagster-postgres.yaml").read_text())
    assert postgres["postgresqlScheme"] == local["run_storage"]["config"]["postgres_db"]["scheme"]


def test_every_variable_is_one_the_settings_read_and_together_they_load(code_location, deployed_settings):
    unknown = set(plain_env(code_location)) - variables_settings_reads()
    assert not unknown, f"settings.py reads no variable named {sorted(unknown)}"
    assert deployed_settings.weaviate_url and not deployed_settings.embedded
    assert deployed_settings.weaviate_replication_factor == 3
    assert (deployed_settings.weaviate_read_consistency, deployed_settings.weaviate_write_consistency) == ("ONE", "QUORUM")


def test_secrets_come_from_kubernetes_secrets(code_location):
    env = plain_env(code_location)
    for secret in ("WEAVIATE_API_KEY", "HYBRID_API_TOKEN", "HYBRID_SYNTH_API_KEY"):
        assert secret not in env, f"{secret} must come from a Secret, not from the values file"
    assert [s["name"] for s in code_location["envSecrets"]] == ["hybrid-assets-secrets"]


def test_the_adapter_registry_is_on_shared_storage_where_the_data_dir_points(code_location, deployed_settings):
    volumes = {v["name"]: v for v in code_location["volumes"]}
    mounts = {PurePosixPath(m["mountPath"]): m for m in code_location["volumeMounts"]}
    data_dir = PurePosixPath(plain_env(code_location)["HYBRID_DATA_DIR"])
    assert data_dir in mounts, f"HYBRID_DATA_DIR={data_dir} is not a mount path: {sorted(map(str, mounts))}"
    volume = volumes[mounts[data_dir]["name"]]
    assert volume["persistentVolumeClaim"]["claimName"], "the data folder must be a (shared) PVC"
    # the registry the code writes and serving reads is below that mount, in every pod
    assert Path(deployed_settings.data_dir) == Path(data_dir)
    assert PurePosixPath(deployed_settings.adapters_dir).is_relative_to(data_dir)
    cache = PurePosixPath(plain_env(code_location)["HYBRID_CACHE_DIR"])
    assert cache in mounts and mounts[cache]["name"] == mounts[data_dir]["name"]
    assert mounts[cache].get("subPath") != mounts[data_dir].get("subPath"), "cache and data share one folder"


def test_weaviate_has_enough_nodes_for_the_replication_factor(weaviate, deployed_settings):
    replicas = weaviate["replicas"]
    assert replicas >= deployed_settings.weaviate_replication_factor > 1
    voters = int(weaviate["env"]["RAFT_BOOTSTRAP_EXPECT"])
    assert voters % 2 == 1 and voters <= replicas
    assert int(weaviate["env"]["REPLICATION_MINIMUM_FACTOR"]) <= replicas
    # writes at QUORUM still succeed with one node down (the three-node cluster test shows it locally)
    if deployed_settings.weaviate_write_consistency == "QUORUM":
        assert deployed_settings.weaviate_replication_factor // 2 + 1 <= replicas - 1
    # the Weaviate version the project builds and tests (settings' WEAVIATE_VERSION default)
    tested = re.search(r'"WEAVIATE_VERSION"\) or "(v[\d.]+)"', SETTINGS_SOURCE.read_text()).group(1)
    assert f"v{weaviate['image']['tag']}" == tested == deployed_settings.weaviate_version


def test_the_services_are_on_the_ports_the_client_uses(weaviate, deployed_settings):
    rest, grpc = urlparse(deployed_settings.weaviate_url), urlparse(deployed_settings.weaviate_grpc_url)
    http_ports = {p["name"]: p["port"] for p in weaviate["service"]["ports"]}
    assert rest.hostname.split(".")[0] == weaviate["service"]["name"] and rest.port == http_ports["http"]
    assert weaviate["grpcService"]["enabled"] is True
    grpc_ports = {p["name"]: p["port"] for p in weaviate["grpcService"]["ports"]}
    assert grpc.hostname.split(".")[0] == weaviate["grpcService"]["name"] and grpc.port == grpc_ports["grpc"]
    assert rest.hostname.split(".")[1] == grpc.hostname.split(".")[1], "REST and gRPC in different namespaces"
    for service in ("service", "grpcService"):
        assert weaviate[service]["type"] == "ClusterIP", f"{service}: not exposed outside the cluster by default"


def test_weaviate_requires_an_api_key_kept_in_a_secret(weaviate):
    assert weaviate["authentication"]["anonymous_access"]["enabled"] is False
    env = weaviate["env"]
    assert env["AUTHENTICATION_APIKEY_ENABLED"] == "true"
    assert "AUTHENTICATION_APIKEY_ALLOWED_KEYS" not in env, "the keys belong in a Secret"
    assert weaviate["envSecrets"]["AUTHENTICATION_APIKEY_ALLOWED_KEYS"]
    users = env["AUTHENTICATION_APIKEY_USERS"].split(",")
    assert set(users) <= set(weaviate["authorization"]["admin_list"]["users"])
