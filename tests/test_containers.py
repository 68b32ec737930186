"""The mlflow container that `up` registers really starts, with the real mlflow package.

moto only proves that AWS accepted the task definition. Here its `mlflow` container is read
back from moto exactly as `up` registered it (entryPoint, command, environment), its `secrets`
are resolved into environment variables the way ECS injects them, the database endpoint is
pointed at a real MariaDB on 127.0.0.1 (one per test session, from pytest-mysql), and
``entryPoint + command`` runs here under /bin/sh. Nothing leaves 127.0.0.1: the artifact
bucket is only recorded (direct mode) or configured (proxied mode), never reached.

MariaDB and mlflow are required: a missing one fails these tests, it never skips them.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
import pymysql
import pytest
from conftest import REGION, make_config, step_context
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws
from pytest_mysql import factories
from pytest_mysql.executor import MySQLExecutor
from sqlalchemy.engine import make_url

from mlflow_ecs import engine, render
from mlflow_ecs.aws import AwsContext

DOMAIN = "mlflow.example.com"
EVIL = "evil.example"
ARTIFACT_PATH = "team/mlflow"
# Every character that breaks a URL, a shell word or a quoted string, plus a non-ASCII letter.
# "%41" must not come out as "A" and "$HOME" / `id` must not be expanded by the shell.
HOSTILE_PASSWORD = "p@ss:w/rd?x#y%41&z'q\"$HOME`id`\\ é!"
START_TIMEOUT = 120.0  # a cold start on a 2-core CI machine, imports and migrations included
SIGTERM_BUDGET = 15.0  # well inside the task definition's stopTimeout
REQUEST_TIMEOUT = 15.0
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
CREATE = "/api/2.0/mlflow/experiments/create"
INVALID_HOST = b"Invalid Host header"
CORS_BLOCKED = b"Cross-origin request blocked"
BIN_DIR = Path(sys.executable).parent  # where this interpreter's `python` and `mlflow` live


def _system_binary(name: str) -> str:
    """A MariaDB binary; Debian puts the server in /usr/sbin, which a CI PATH may lack."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not found:
        pytest.fail(f"{name} not found: install Debian's package mariadb-server")
    return found


@pytest.fixture(scope="session")
def mariadb_binaries() -> dict[str, str]:
    names = ("mariadbd", "mariadbd-safe", "mariadb-admin", "mariadb-install-db", "mariadb")
    return {n: _system_binary(n) for n in names}


# One MariaDB for the whole session, on a free port of 127.0.0.1, as root (mysqld refuses
# root unless --user=root, which pytest-mysql passes). The paths are resolved at import time
# only to hand them to the factory; a missing binary fails in `mariadb` below, not here.
def _path_or_name(name: str) -> str:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin") or name


mariadb_proc = factories.mysql_proc(
    mysqld_exec=Path(_path_or_name("mariadbd")),
    mysqld_safe=Path(_path_or_name("mariadbd-safe")),
    admin_executable=_path_or_name("mariadb-admin"),
    install_db=_path_or_name("mariadb-install-db"),
    host="127.0.0.1",
    user="root",
    port=None,
    params="--bind-address=127.0.0.1 --skip-name-resolve --character-set-server=utf8mb4",
)


@dataclass(frozen=True)
class MariaDB:
    port: int
    socket_path: str
    client: str

    def sql(self, statements: str) -> str:
        """Run SQL as root over the unix socket (root authenticates by unix_socket there)."""
        done = subprocess.run(
            [
                self.client,
                f"--socket={self.socket_path}",
                "--user=root",
                "--batch",
                "-e",
                statements,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, f"mariadb failed: {done.stderr}"
        return done.stdout

    def add_database(self, name: str, user: str, password: str) -> None:
        """A database and a user whose password is given by its hash (no quoting of it in SQL).

        PyMySQL sends a str password latin-1 encoded, so the mysql_native_password hash is
        taken of those bytes: '*' + upper hex of SHA1(SHA1(password)).
        """
        self.sql(
            f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4;"
            f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY PASSWORD '{native_hash(password)}';"
            f"GRANT ALL PRIVILEGES ON `{name}`.* TO '{user}'@'127.0.0.1';"
        )
        # The user really authenticates over TCP with that password, as MLflow will.
        conn = pymysql.connect(
            host="127.0.0.1", port=self.port, user=user, password=password, database=name,
            connect_timeout=10,
        )  # fmt: skip
        conn.close()


def native_hash(password: str) -> str:
    stage1 = hashlib.sha1(password.encode("latin-1")).digest()
    return "*" + hashlib.sha1(stage1).hexdigest().upper()


@pytest.fixture(scope="session")
def mariadb(mariadb_binaries: dict[str, str], mariadb_proc: MySQLExecutor) -> MariaDB:
    db = MariaDB(
        port=int(mariadb_proc.port),
        socket_path=mariadb_proc.unixsocket,
        client=mariadb_binaries["mariadb"],
    )
    assert "MariaDB" in db.sql("SELECT VERSION()")
    return db


# --- what `up` registered ----------------------------------------------------------------------


@dataclass
class Registered:
    task_definition: dict[str, Any]
    container: dict[str, Any]
    secrets: dict[str, str]  # name -> value, resolved from valueFrom as ECS does
    bucket: str
    alb_dns: str
    cfg_port: int
    db_name: str


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        nested = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = deep_merge(out[k], v) if nested else v
    return out


def register(data: dict[str, Any], db_password: str = HOSTILE_PASSWORD) -> Registered:
    """Run the real engine.up against moto in-process and read the task definition back.

    The environment and moto setup are conftest's `aws_env` / `aws` fixtures', repeated here so
    that a module-scoped server can use them. The database password secret is given a new
    value (the hostile one) before it is resolved, as if it had been set so in Secrets Manager.
    """
    with pytest.MonkeyPatch.context() as mp:
        for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            mp.delenv(var, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", REGION)
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        mp.setenv("MOTO_ECS_SERVICE_RUNNING", "1")
        with mock_aws(config={"iam": {"load_aws_managed_policies": True}}):
            aws = AwsContext(REGION)
            cert = aws.client("acm").request_certificate(DomainName=DOMAIN)["CertificateArn"]
            doc = deep_merge(
                {
                    "load_balancer": {"domain": DOMAIN, "certificate_arn": cert},
                    "artifacts": {"path": ARTIFACT_PATH},
                },
                data,
            )
            cfg = make_config(doc)
            sc = step_context(aws, cfg)
            result = engine.up(sc)
            td = aws.ecs.describe_task_definition(taskDefinition=result.task_definition)
            task_definition = td["taskDefinition"]
            container = next(
                c for c in task_definition["containerDefinitions"] if c["name"] == render.MLFLOW
            )
            aws.secrets.put_secret_value(
                SecretId=sc.names.secret_db_password, SecretString=db_password
            )
            resolved = {
                s["name"]: aws.secrets.get_secret_value(SecretId=s["valueFrom"])["SecretString"]
                for s in container.get("secrets", [])
            }
            return Registered(
                task_definition=task_definition,
                container=container,
                secrets=resolved,
                bucket=sc.names.bucket,
                alb_dns=sc.out.alb_dns,
                cfg_port=cfg.mlflow.port,
                db_name=cfg.database.name,
            )


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("environment", [])}


# --- running the container's command here -------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def container_process_env(reg: Registered, mariadb: MariaDB, home: Path) -> dict[str, str]:
    """What the container's process sees: its environment, its injected secrets, and ours.

    Only the database endpoint is overridden (MariaDB here instead of Aurora); the AWS
    credentials are fake (nothing reaches S3); `python` and `mlflow` resolve to this interpreter.
    """
    path = f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    python = shutil.which("python", path=path)
    assert python and os.path.samefile(python, sys.executable), (
        f"`python` on the container's PATH is {python}, not this interpreter {sys.executable}"
    )
    assert shutil.which("mlflow", path=str(BIN_DIR)), f"mlflow is not installed in {BIN_DIR}"
    return {
        "PATH": path,
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        **env_of(reg.container),
        **reg.secrets,
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(mariadb.port),
    }


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    reg: Registered
    _log: IO[bytes] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        try:
            hdrs = dict(headers or {})
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


def start(reg: Registered, mariadb: MariaDB, tmp: Path) -> Server:
    """Start ``entryPoint + command`` under /bin/sh, in its own session (for cleanup only)."""
    c = reg.container
    assert c["entryPoint"] == ["sh", "-c"] and len(c["command"]) == 1, c
    tmp.mkdir(parents=True, exist_ok=True)
    env = container_process_env(reg, mariadb, tmp)
    argv = ["/bin/sh", *c["entryPoint"][1:], *c["command"]]
    log_path = tmp / "mlflow.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        argv, env=env, cwd=tmp, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    return Server(proc=proc, port=reg.cfg_port, log_path=log_path, reg=reg, _log=log)


def wait_healthy(server: Server, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"mlflow exited with {server.proc.returncode}:\n{server.log()[-4000:]}")
        with contextlib.suppress(OSError):
            if server.request("GET", "/health")[0] == 200:
                return
        time.sleep(0.25)
    pytest.fail(f"mlflow did not answer /health within {timeout:.0f} s:\n{server.log()[-4000:]}")


def stop(server: Server) -> None:
    """Always leaves nothing behind: SIGTERM, a bounded wait, then SIGKILL to the whole group."""
    pgid = server.proc.pid  # start_new_session: the shell (then mlflow) leads its own group
    try:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.proc.wait(timeout=20)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(timeout=10)
        server._log.close()


@contextlib.contextmanager
def running(reg: Registered, mariadb: MariaDB, tmp: Path) -> Iterator[Server]:
    server = start(reg, mariadb, tmp)
    try:
        wait_healthy(server)
        yield server
    finally:
        stop(server)


def server_config(port: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return deep_merge({"mlflow": {"port": port}}, extra or {})


@pytest.fixture(scope="session")
def mlflow_db(mariadb: MariaDB) -> MariaDB:
    """The stack's database (default name and user) with the hostile password, once.

    Every server of the session shares it, as the tasks of one service share Aurora: the first
    creates the tables (MLflow's migrations take a while), the others find them.
    """
    defaults = make_config().database
    mariadb.add_database(defaults.name, defaults.username, HOSTILE_PASSWORD)
    return mariadb


def prepare(extra: dict[str, Any] | None = None) -> Registered:
    return register(server_config(free_port(), extra))


def server_process(server: Server) -> psutil.Process:
    """The uvicorn or gunicorn process that mlflow spawned (python -m uvicorn|gunicorn ...)."""
    root = psutil.Process(server.proc.pid)
    found = [p for p in root.children() if {"uvicorn", "gunicorn"} & set(p.cmdline())]
    assert len(found) == 1, [p.cmdline() for p in root.children()]
    return found[0]


def serving_workers(server: Server) -> list[psutil.Process]:
    """The HTTP worker processes: the children of that server process."""
    children = server_process(server).children()
    return [p for p in children if not any("resource_tracker" in a for a in p.cmdline())]


def assert_workers(server: Server, expected: int, timeout: float = 60.0) -> None:
    """The worker count reaches `expected` and stays there (three samples in a row)."""
    deadline = time.monotonic() + timeout
    stable, seen = 0, -1
    while time.monotonic() < deadline:
        count = len(serving_workers(server))
        stable = stable + 1 if count == seen else 0
        seen = count
        if count == expected and stable >= 2:
            return
        assert count <= expected, f"{count} workers, configured {expected}"
        time.sleep(0.5)
    pytest.fail(f"{seen} workers after {timeout:.0f} s, configured {expected}")


# --- the shared server: direct artifacts, uvicorn (no gunicorn_opts), hostile password ---------


@pytest.fixture(scope="module", autouse=True)
def no_telemetry() -> Iterator[None]:
    """The MLflow client in this process must not phone home either."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("DO_NOT_TRACK", "true")
        yield


DIRECT_WORKERS = 2


@pytest.fixture(scope="module")
def direct(mlflow_db: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    reg = prepare({"mlflow": {"workers": DIRECT_WORKERS, "gunicorn_opts": ""}})
    with running(reg, mlflow_db, tmp_path_factory.mktemp("mlflow-direct")) as server:
        yield server


def test_registered_command_is_the_one_rendered(direct: Server) -> None:
    """The container under test is `up`'s, unchanged: the exec'd mlflow, secrets by reference."""
    c = direct.reg.container
    (command,) = c["command"]
    assert c["entryPoint"] == ["sh", "-c"]
    assert "exec mlflow server" in command
    assert "--gunicorn-opts" not in command
    assert f"--workers {DIRECT_WORKERS}" in command
    assert HOSTILE_PASSWORD not in json.dumps(direct.reg.task_definition)
    assert [s["name"] for s in c["secrets"]] == ["DB_PASSWORD"]
    assert direct.reg.secrets["DB_PASSWORD"] == HOSTILE_PASSWORD


def test_health_answers_ok(direct: Server) -> None:
    status, body = direct.request("GET", "/health")
    assert (status, body) == (200, b"OK")


def test_client_creates_and_reads_back_an_experiment_and_a_run(direct: Server) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=direct.url)
    name = f"exp-{uuid.uuid4().hex}"
    exp_id = client.create_experiment(name)
    run = client.create_run(exp_id)
    client.log_param(run.info.run_id, "alpha", "0.5")
    client.log_metric(run.info.run_id, "rmse", 0.25, step=3)
    got = client.get_run(run.info.run_id)
    assert got.data.params == {"alpha": "0.5"}
    assert got.data.metrics == {"rmse": 0.25}
    history = client.get_metric_history(run.info.run_id, "rmse")
    assert [(m.value, m.step) for m in history] == [(0.25, 3)]
    assert client.get_experiment_by_name(name).experiment_id == exp_id


def test_direct_mode_artifact_location_is_the_bucket_path(direct: Server) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=direct.url)
    exp = client.get_experiment(client.create_experiment(f"art-{uuid.uuid4().hex}"))
    assert exp.artifact_location.startswith(f"s3://{direct.reg.bucket}/{ARTIFACT_PATH}/")


def test_mlflow_created_its_tables_with_the_hostile_password(
    direct: Server, mlflow_db: MariaDB
) -> None:
    tables = mlflow_db.sql(f"SHOW TABLES FROM `{direct.reg.db_name}`").split()
    assert {"experiments", "runs", "params", "metrics", "alembic_version"} <= set(tables)


def test_hosts_of_the_stack_pass_the_host_check(direct: Server) -> None:
    allowed = env_of(direct.reg.container)["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert direct.reg.alb_dns in allowed and DOMAIN in allowed
    for host in (direct.reg.alb_dns, DOMAIN):
        status, body = direct.request("GET", SEARCH, {"Host": host})
        assert status == 200, (host, status, body)
        assert INVALID_HOST not in body


def test_a_foreign_host_is_rejected(direct: Server) -> None:
    """Proves the host check is active, so the test above means something."""
    status, body = direct.request("GET", SEARCH, {"Host": EVIL})
    assert status == 403 and INVALID_HOST in body, (status, body)


def test_a_browser_post_from_the_domain_passes_the_cors_check(direct: Server) -> None:
    """What the UI in a browser sends, on the domain and on the ALB's own HTTPS name."""
    for host in (DOMAIN, direct.reg.alb_dns):
        headers = {"Host": host, "Origin": f"https://{host}"}
        body = {"name": f"ui-{uuid.uuid4().hex}"}
        status, got = direct.request("POST", CREATE, headers, body)
        assert status == 200, (host, status, got)
        assert "experiment_id" in json.loads(got)


def test_a_post_from_a_foreign_origin_is_refused(direct: Server) -> None:
    headers = {"Host": DOMAIN, "Origin": f"https://{EVIL}"}
    status, got = direct.request("POST", CREATE, headers, {"name": f"evil-{uuid.uuid4().hex}"})
    assert status == 403 and CORS_BLOCKED in got, (status, got)


def test_uvicorn_workers_are_honoured(direct: Server) -> None:
    assert_workers(direct, DIRECT_WORKERS)


# --- a second server: proxied artifacts, gunicorn_opts set, then SIGTERM ------------------------

PROXIED_WORKERS = 3  # neither MLflow's default (4) nor the shared server's


def test_proxied_gunicorn_server_starts_and_stops_within_the_stop_timeout(
    mlflow_db: MariaDB, tmp_path: Path
) -> None:
    """gunicorn_opts set, proxied artifacts. gunicorn's master takes ~15 s to exit on SIGTERM
    here (its workers exit at once), so this one is held to the task's stopTimeout, after which
    ECS would SIGKILL it; the default (uvicorn) server is held to 15 s below."""
    reg = prepare(
        {
            "artifacts": {"mode": "proxied"},
            "mlflow": {"workers": PROXIED_WORKERS, "gunicorn_opts": "--timeout 120"},
        },
    )
    (command,) = reg.container["command"]
    assert "--gunicorn-opts '--timeout 120'" in command and "--serve-artifacts" in command
    stop_timeout = registered_stop_timeout(reg)

    from mlflow import MlflowClient

    with running(reg, mlflow_db, tmp_path) as server:
        # Proxied mode: clients get the server's own artifact scheme, not the bucket.
        client = MlflowClient(tracking_uri=server.url)
        exp = client.get_experiment(client.create_experiment(f"px-{uuid.uuid4().hex}"))
        assert exp.artifact_location.startswith("mlflow-artifacts:/")
        # The host and origin checks hold under gunicorn (Flask) too.
        assert server.request("GET", SEARCH, {"Host": DOMAIN})[0] == 200
        assert server.request("GET", SEARCH, {"Host": EVIL})[0] == 403
        headers = {"Host": DOMAIN, "Origin": f"https://{DOMAIN}"}
        assert server.request("POST", CREATE, headers, {"name": uuid.uuid4().hex})[0] == 200
        assert_workers(server, PROXIED_WORKERS)
        gunicorn = server_process(server).cmdline()
        assert "gunicorn" in gunicorn and "--timeout" in gunicorn, gunicorn

        assert_stops_on_sigterm(server, budget=float(stop_timeout))


def registered_stop_timeout(reg: Registered) -> int:
    """stopTimeout is in the task definition, not left to the ECS agent's default."""
    stop_timeout = reg.container.get("stopTimeout")
    assert isinstance(stop_timeout, int), reg.container
    assert stop_timeout >= SIGTERM_BUDGET
    return stop_timeout


def running_pids(procs: list[psutil.Process]) -> list[int]:
    alive = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p.pid)
    return alive


def assert_stops_on_sigterm(server: Server, budget: float = SIGTERM_BUDGET) -> float:
    """SIGTERM to the started PID (what ECS signals), not its group, stops MLflow in `budget`.

    "Stopped" is what ECS sees: the PID exits (the container ends with its main process, and the
    runtime kills whatever is left, e.g. MLflow's job-runner consumers), after the HTTP server
    and its workers have stopped.
    """
    pid = server.proc.pid
    # `exec` replaced the shell: the PID ECS signals is mlflow itself, not sh.
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    assert any("mlflow" in part for part in cmdline), cmdline
    assert Path(cmdline[0]).name.startswith("python"), cmdline
    serving = [server_process(server), *serving_workers(server)]
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    try:
        code = server.proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mlflow still running {budget:.0f} s after SIGTERM:\n{server.log()[-3000:]}")
    elapsed = time.monotonic() - started
    assert code in (0, -signal.SIGTERM, 128 + signal.SIGTERM), code
    left = running_pids(serving)
    assert not left, f"the HTTP server or its workers outlived mlflow: {left}"
    with pytest.raises(OSError):
        server.request("GET", "/health")
    return elapsed


def test_default_server_stops_within_15_s_of_sigterm(mlflow_db: MariaDB, tmp_path: Path) -> None:
    """The default configuration (uvicorn, no gunicorn_opts): MLflow exits in ~6 s."""
    reg = prepare()
    registered_stop_timeout(reg)
    with running(reg, mlflow_db, tmp_path) as server:
        assert_stops_on_sigterm(server, budget=SIGTERM_BUDGET)


def test_health_is_not_served_while_the_database_is_unreachable(tmp_path: Path) -> None:
    """MLflow connects to its database before it listens: no DB, no /health (ALB: unhealthy).

    Once it runs, /health is a static "OK" that does not touch the database.
    """
    reg = register(server_config(free_port()))
    closed_port = free_port()  # nothing listens there
    nowhere = MariaDB(port=closed_port, socket_path="", client="")
    server = start(reg, nowhere, tmp_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "could not be created" not in server.log():
            assert server.proc.poll() is None, server.log()[-4000:]
            assert time.monotonic() < deadline, server.log()[-4000:]
            time.sleep(0.25)
        with pytest.raises(OSError):
            server.request("GET", "/health")
    finally:
        stop(server)


# --- the password's encoding, as the shell does it ---------------------------------------------

# Any text an environment variable can hold (no NUL, no lone surrogate), with what matters for
# a URL or a shell drawn often (percent-escapes too), so that most examples contain several.
HOSTILE_PIECES = [*"@:/?#%&'\"$`\\ ;|*[]{}=+!~^<>,é€\t\n", "%41", "%2F", "%40", "%%", "%4", "${x}"]
env_text = st.lists(
    st.one_of(
        st.sampled_from(HOSTILE_PIECES),
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    ),
    min_size=1,
    max_size=30,
).map("".join)


URL_PARTS = ("mlflow", "db.example", 3306, "mlflow")


def uri_for(password_url: str) -> str:
    return f"mysql+pymysql://mlflow:{password_url}@db.example:3306/mlflow"


@settings(max_examples=300, deadline=None)
@given(password=env_text)
def test_quoted_password_round_trips_through_sqlalchemy(password: str) -> None:
    url = make_url(uri_for(urllib.parse.quote(password, safe="")))
    assert url.password == password
    assert (url.username, url.host, url.port, url.database) == URL_PARTS


def shell_backend_uri(fake_bin: Path, password: str) -> str:
    """The --backend-store-uri the registered command hands to mlflow for this password.

    The exact command of the rendered container runs under /bin/sh with a stand-in `mlflow`
    (first on PATH) that prints its arguments; `python` is the real interpreter.
    """
    cfg = make_config()
    names = cfg.names("123456789012", REGION)
    command = render.mlflow_command(cfg, names)
    env = {
        "PATH": f"{fake_bin}{os.pathsep}{BIN_DIR}{os.pathsep}/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "DB_USER": "mlflow",
        "DB_HOST": "db.example",
        "DB_PORT": "3306",
        "DB_NAME": "mlflow",
        "DB_PASSWORD": password,
    }
    done = subprocess.run(
        ["/bin/sh", "-c", command], env=env, capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    args = done.stdout.decode().split("\0")
    return args[args.index("--backend-store-uri") + 1]


@pytest.fixture(scope="module")
def fake_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bin_dir = tmp_path_factory.mktemp("fake-bin")
    fake = bin_dir / "mlflow"
    fake.write_text("#!/bin/sh\nprintf '%s\\0' \"$@\"\n")
    fake.chmod(0o755)
    return bin_dir


def test_shell_builds_the_uri_for_the_hostile_password(fake_mlflow: Path) -> None:
    uri = shell_backend_uri(fake_mlflow, HOSTILE_PASSWORD)
    assert make_url(uri).password == HOSTILE_PASSWORD
    assert HOSTILE_PASSWORD not in uri  # it was encoded, not pasted


@settings(max_examples=40, deadline=None)
@given(password=env_text)
def test_shell_encoding_round_trips_through_sqlalchemy(fake_mlflow: Path, password: str) -> None:
    url = make_url(shell_backend_uri(fake_mlflow, password))
    assert url.password == password
    assert (url.username, url.host, url.port, url.database) == URL_PARTS
