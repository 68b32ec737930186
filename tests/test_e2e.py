"""The installed console script, as subprocesses, against moto's HTTP server on 127.0.0.1.

(a) `up` → `status --json` → `down --yes` against a ThreadedMotoServer this test starts;
(b) `mlflow-ecs demo` on a machine with no AWS account (and a hostile AWS environment);
(c) `mlflow-ecs sandbox` as a long-running process that other processes use, ended by SIGINT
    (and by SIGTERM). Network only to 127.0.0.1; every subprocess has a timeout.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import CLIENT_SECRET, ENV, REGION
from test_cli import MOTO_ACCOUNT, expected_resources, names_of, table_rows

from mlflow_ecs import config
from mlflow_ecs.cli import DEMO_OAUTH_ENV

TIMEOUT = 180  # seconds, for any one command
CONFIG = """
[stack]
name = "e2e"

[oauth2_proxy]
email_domains = ["example.com"]

[service]
desired_count = {count}
"""


def console_script() -> list[str]:
    """The `mlflow-ecs` the package installed (next to this Python, else on PATH)."""
    beside = Path(sys.executable).with_name("mlflow-ecs")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("mlflow-ecs")
    return [found] if found else [sys.executable, "-m", "mlflow_ecs.cli"]


def base_env(home: Path) -> dict[str, str]:
    """A clean environment: no AWS settings of the machine, no proxy for 127.0.0.1."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "COLUMNS": "250",
        "NO_PROXY": "127.0.0.1,localhost",
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "MLFLOW_ECS_WAIT_TIMEOUT": "60",  # a wait that never ends fails in a minute
        "MLFLOW_ECS_POLL_INTERVAL": "0.05",
    }


def client_env(home: Path, endpoint: str, region: str = REGION) -> dict[str, str]:
    return base_env(home) | {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": region,
        **ENV,
    }


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*console_script(), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    for stream in (done.stdout, done.stderr):
        assert CLIENT_SECRET not in stream
        assert DEMO_OAUTH_ENV["OAUTH2_PROXY_CLIENT_SECRET"] not in stream
    return done


def ok(done: subprocess.CompletedProcess[str], code: int = 0) -> subprocess.CompletedProcess[str]:
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def assert_deployed(doc: dict[str, Any], names: Any, count: int) -> None:
    assert doc["exists"] is True
    assert doc["healthy"] is True
    assert doc["service"]["running"] == doc["service"]["desired"] == count
    assert doc["url"].startswith("http://")
    assert {(r["kind"], r["name"]) for r in doc["resources"]} == expected_resources(names)
    assert all(r["present"] for r in doc["resources"])


def lifecycle(env: dict[str, str], cwd: Path, count: int) -> None:
    """up → status --json → down --yes → status --json, each its own process."""
    up = ok(run(["up"], env, cwd))
    assert "Stack 'e2e' is up" in up.stderr
    status = ok(run(["status", "--json"], env, cwd))
    names = names_of(CONFIG.format(count=count), env["AWS_REGION"])
    assert_deployed(json.loads(status.stdout), names, count)
    down = ok(run(["down", "--yes"], env, cwd))
    assert "Stack 'e2e' is down." in down.stderr
    assert f"database snapshot {names.snapshot_prefix}" in down.stderr
    after = json.loads(ok(run(["status", "--json"], env, cwd), code=3).stdout)
    assert {r["kind"] for r in after["resources"] if r["present"]} == {"bucket", "secret"}


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A working directory holding ./mlflow-ecs.toml, and a HOME of its own."""
    (tmp_path / "mlflow-ecs.toml").write_text(CONFIG.format(count=1), encoding="utf-8")
    yield tmp_path


# --- (a) against a moto server this test starts ------------------------------------------------


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's HTTP server on 127.0.0.1, a free port, configured before it starts."""
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    reset = urllib.request.Request(f"{endpoint}/moto-api/reset", data=b"", method="POST")
    with urllib.request.urlopen(reset, timeout=30):
        pass
    yield endpoint
    server.stop()


def test_up_status_down_as_separate_processes_against_moto_server(
    moto_server: str, workdir: Path
) -> None:
    lifecycle(client_env(workdir, moto_server), workdir, count=1)


# --- (b) demo -----------------------------------------------------------------------------------


def test_demo_runs_the_whole_stack_with_no_aws_account(tmp_path: Path) -> None:
    env = base_env(tmp_path) | {
        # What a real machine may have set: none of it may be used, nor reached.
        "AWS_PROFILE": "production",
        "AWS_ACCESS_KEY_ID": "AKIAREALLOOKINGKEY00",
        "AWS_SECRET_ACCESS_KEY": "real-looking-secret",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",  # nothing listens there
        "AWS_REGION": "ap-southeast-2",
    }
    done = ok(run(["demo"], env, tmp_path))
    with resources.as_file(resources.files("mlflow_ecs") / "demo.toml") as path:
        cfg = config.load(path, {})
    names = cfg.names(MOTO_ACCOUNT, "us-east-1")
    assert expected_resources(names) <= table_rows(done.stdout)  # every resource listed
    assert "service: 1/1 tasks running; stack is healthy" in done.stdout
    # The two containers, readable, with secret references (ARNs), never values.
    assert "container mlflow" in done.stdout
    assert "container oauth2-proxy" in done.stdout
    assert re.search(r"exec mlflow server", done.stdout)
    assert re.search(
        r"DB_PASSWORD ← arn:aws:secretsmanager:us-east-1:\d{12}:secret:demo/", done.stdout
    )
    assert "OAUTH2_PROXY_CLIENT_SECRET ← arn:aws:secretsmanager:" in done.stdout
    assert "4180/tcp" in done.stdout
    assert "url: http://demo-alb-" in done.stdout
    # A plan right after up: nothing to change.
    assert "No changes: stack 'demo' matches the config." in done.stdout
    # Then down, and what it kept.
    assert "Stack 'demo' is down." in done.stderr
    kept = done.stderr.split("Kept:", 1)[1]
    assert f"bucket {names.bucket}" in kept
    assert f"database snapshot {names.snapshot_prefix}" in kept
    assert DEMO_OAUTH_ENV["OAUTH2_PROXY_CLIENT_ID"] not in done.stdout + done.stderr


# --- (c) sandbox --------------------------------------------------------------------------------


class Sandbox:
    """`mlflow-ecs sandbox ARGS` as a background process; its export lines, parsed."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.stderr_path = cwd / "sandbox.stderr"
        self._stderr = self.stderr_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [*console_script(), "sandbox", *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def exports(self, count: int = 4, timeout: float = 60) -> dict[str, str]:
        found: dict[str, str] = {}
        while len(found) < count:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"no export lines from the sandbox: {self.stderr()}")
            words = shlex.split(line)
            assert words[0] == "export" and len(words) == 2, line
            key, _, value = words[1].partition("=")
            found[key] = value
        return found

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(encoding="utf-8")

    def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._stderr.close()


@pytest.fixture
def sandbox_process(tmp_path: Path) -> Iterator[Any]:
    started: list[Sandbox] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Sandbox:
        box = Sandbox(list(args), env or base_env(tmp_path), tmp_path)
        started.append(box)
        return box

    yield start
    for box in started:
        box.close()


def test_sandbox_serves_separate_up_status_down_processes_and_stops_on_sigint(
    sandbox_process: Any, tmp_path: Path
) -> None:
    cfg = tmp_path / "two-tasks.toml"
    cfg.write_text(CONFIG.format(count=2), encoding="utf-8")
    env = base_env(tmp_path) | {"MLFLOW_ECS_CONFIG": str(cfg)}
    box = sandbox_process("--region", "eu-west-1", env=env)
    exports = box.exports()
    assert set(exports) == {
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
    }
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", exports["AWS_ENDPOINT_URL"])
    assert exports["AWS_REGION"] == "eu-west-1"
    assert "2 running task(s)" in box.stderr()  # the config's desired count

    clients = base_env(tmp_path) | exports | ENV | {"MLFLOW_ECS_CONFIG": str(cfg)}
    lifecycle(clients, tmp_path, count=2)

    assert box.stop(signal.SIGINT) == 0
    assert "Emulator stopped." in box.stderr()
    assert "Traceback" not in box.stderr()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sandbox_on_a_given_port_stops_on_sigterm(sandbox_process: Any, tmp_path: Path) -> None:
    port = free_port()
    box = sandbox_process("--port", str(port))
    exports = box.exports()
    assert exports["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{port}"
    assert exports["AWS_REGION"] == "us-east-1"
    assert "1 running task(s)" in box.stderr()  # no config: one task
    assert box.stop(signal.SIGTERM) == 0
    assert "Emulator stopped." in box.stderr()


def test_sandbox_on_a_taken_port_exits_2(sandbox_process: Any, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        box = sandbox_process("--port", str(taken.getsockname()[1]))
        assert box.proc.wait(timeout=60) == 2
    assert "Could not start the AWS emulator" in box.stderr()
    assert "--port" in box.stderr()


def test_the_sandbox_module_points_this_process_at_the_emulator_then_restores_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow_ecs import sandbox
    from mlflow_ecs.aws import AwsContext

    monkeypatch.setenv("AWS_PROFILE", "production")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    before = dict(os.environ)
    with sandbox.running("eu-west-1", running_tasks=3) as box:
        assert os.environ["AWS_ENDPOINT_URL"] == box.endpoint
        assert "AWS_PROFILE" not in os.environ
        assert "AWS_ENDPOINT_URL_S3" not in os.environ
        assert os.environ["MOTO_ECS_SERVICE_RUNNING"] == "3"
        aws = AwsContext()
        assert aws.region == "eu-west-1"
        assert aws.account_id == MOTO_ACCOUNT
        policy = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
        assert aws.iam.get_policy(PolicyArn=policy)["Policy"]["PolicyName"]  # managed: loaded
    assert dict(os.environ) == before
