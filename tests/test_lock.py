"""One up/down of a stack at a time: the SSM lock, in-process and with two real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CLIENT_SECRET, ENV, REGION, FakeTime, make_config, step_context

from mlflow_ecs import lock
from mlflow_ecs.aws import AwsContext
from mlflow_ecs.steps.base import Poll


def test_a_second_holder_is_refused_with_who_and_since(aws: AwsContext) -> None:
    sc = step_context(aws, make_config())
    mine = lock.acquire(sc, "up")

    with pytest.raises(lock.StackLocked) as refused:
        lock.acquire(step_context(aws, make_config()), "down")

    text = refused.value.message
    assert mine.who in text and "(up)" in text and mine.since in text
    assert "--force-unlock" in refused.value.hint
    lock.release(sc, mine)
    assert lock.current_holder(sc) is None
    lock.release(sc, lock.acquire(sc, "down"))  # free again


def test_waiting_is_bounded_and_polls_at_the_interval(aws: AwsContext) -> None:
    holder = step_context(aws, make_config())
    lock.acquire(holder, "up")
    fake = FakeTime()
    sc = step_context(aws, make_config())
    sc.poll = Poll(interval=2.0, timeout=60, sleep=fake.sleep, clock=fake.clock)

    with pytest.raises(lock.StackLocked):
        lock.acquire(sc, "up", wait_seconds=7)

    assert fake.sleeps == [2.0, 2.0, 2.0, 2.0]  # 0, 2, 4, 6 s tried; at 8 s it gives up


def test_release_leaves_a_lock_that_is_no_longer_ours(aws: AwsContext) -> None:
    sc = step_context(aws, make_config())
    mine = lock.acquire(sc, "up")
    lock.force_unlock(sc)
    theirs = lock.acquire(step_context(aws, make_config()), "down")

    lock.release(sc, mine)

    assert lock.current_holder(sc) == theirs


def test_held_releases_on_an_exception(aws: AwsContext) -> None:
    sc = step_context(aws, make_config())
    with pytest.raises(KeyboardInterrupt), lock.held(sc, "up"):
        raise KeyboardInterrupt
    assert lock.current_holder(sc) is None


def test_two_stacks_have_two_locks(aws: AwsContext) -> None:
    one = step_context(aws, make_config())
    other = step_context(aws, make_config({"stack": {"name": "other"}}))
    lock.acquire(one, "up")
    lock.acquire(other, "up")  # no refusal: a lock per stack
    assert lock.parameter_name("mlflow") != lock.parameter_name("other")
    assert lock.current_holder(one) is not None and lock.current_holder(other) is not None


# --- two real processes against moto's server ------------------------------------------------


def _server(monkeypatch: pytest.MonkeyPatch, running: str) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", running)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # moto's state is per process, not per server: start from nothing (and load the managed
    # IAM policies, which moto does on reset).
    urllib.request.urlopen(
        urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST"), timeout=30
    ).close()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def slow_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto server whose ECS services never report a running task: an `up` against it waits
    (holding the lock) until its bounded wait runs out or it is interrupted."""
    yield from _server(monkeypatch, "0")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    yield from _server(monkeypatch, "1")


def _cli() -> list[str]:
    exe = shutil.which("mlflow-ecs")
    return [exe] if exe else [sys.executable, "-m", "mlflow_ecs.cli"]


def _env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    return (
        env
        | ENV
        | {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "MLFLOW_ECS_POLL_INTERVAL": "0.2",
            "MLFLOW_ECS_WAIT_TIMEOUT": "60",
            "COLUMNS": "200",
        }
    )


def _ssm(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "ssm",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _lock_value(endpoint: str) -> dict[str, str] | None:
    from botocore.exceptions import ClientError

    ssm = _ssm(endpoint)
    try:
        value = ssm.get_parameter(Name=lock.parameter_name("mlflow"))["Parameter"]["Value"]
    except ClientError:
        return None
    return dict(json.loads(value))


def test_a_second_process_is_refused_and_ctrl_c_releases_the_lock(
    slow_server: str, tmp_path: Path
) -> None:
    cfg = tmp_path / "mlflow-ecs.toml"
    cfg.write_text('[stack]\nname = "mlflow"\n')
    env = _env(slow_server)
    first = subprocess.Popen(
        [*_cli(), "-c", str(cfg), "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while _lock_value(slow_server) is None:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first up never took the lock"
            time.sleep(0.2)
        holder = _lock_value(slow_server)
        assert holder is not None and f"pid {first.pid}" in holder["who"]

        second = subprocess.run(
            [*_cli(), "-c", str(cfg), "down", "--yes"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1, second.stderr
        assert f"pid {first.pid}" in second.stderr and "since" in second.stderr
        assert "--force-unlock" in second.stderr
        assert first.poll() is None  # the first one is still at work

        first.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = first.communicate(timeout=60)
        assert first.returncode == 130, err
        assert "run the same command again" in err
        assert _lock_value(slow_server) is None  # released on the way out
        assert CLIENT_SECRET not in out + err + second.stdout + second.stderr
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_force_unlock_breaks_a_stale_lock(server: str, tmp_path: Path) -> None:
    cfg = tmp_path / "mlflow-ecs.toml"
    cfg.write_text('[stack]\nname = "mlflow"\n')

    env = _env(server)
    made = subprocess.run(
        [*_cli(), "-c", str(cfg), "up"], env=env, capture_output=True, timeout=180
    )
    assert made.returncode == 0, made.stderr
    ssm = _ssm(server)
    stale = {"who": "ghost@nowhere pid 1", "command": "up", "since": "2026-01-01T00:00:00+00:00"}
    ssm.put_parameter(Name=lock.parameter_name("mlflow"), Value=json.dumps(stale), Type="String")

    refused = subprocess.run(
        [*_cli(), "-c", str(cfg), "down", "--yes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1 and "ghost@nowhere pid 1" in refused.stderr

    forced = subprocess.run(
        [*_cli(), "-c", str(cfg), "down", "--yes", "--force-unlock"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert forced.returncode == 0, forced.stderr
    assert "ghost@nowhere pid 1" in forced.stderr  # it says whose lock it broke
    assert _lock_value(server) is None
