"""Secrets never leak: every command, with verbose logging (botocore at DEBUG included), on
success and on every failure path, prints no known secret value and logs none.

Known values: the OAuth client id and secret from the environment (conftest), a changed client
secret, and the DB password and cookie secret the first `up` generated (read back from moto's
Secrets Manager with logging off, so the test's own reads leave no records). Each test also
checks that what it guards against was really exercised: botocore logged the request bodies
that carry the values (masked), the AWS error really quoted one.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from conftest import CLIENT_ID, CLIENT_SECRET, ENV, REGION, cli_environment
from test_cli import CONFIG, names_of
from test_e2e import client_env, console_script, moto_server  # noqa: F401 (a fixture)
from typer.testing import CliRunner, Result

from mlflow_ecs import aws as awsmod
from mlflow_ecs import cli as climod
from mlflow_ecs import engine, redact
from mlflow_ecs.cli import app

NEW_SECRET = "GOCSPX-rotated-secret-value-456"
MASK = redact.MASK


@contextmanager
def no_logging() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def stored_values(endpoint: str | None = None) -> list[str]:
    """The DB password and cookie secret the stack holds (read without logging)."""
    names = names_of(CONFIG)
    with no_logging():
        client = boto3.client("secretsmanager", region_name=REGION, endpoint_url=endpoint)
        ids = [names.secret_db_password, names.secret_cookie]
        return [client.get_secret_value(SecretId=i)["SecretString"] for i in ids]


class Runs:
    """Runs the CLI in-process with -v; keeps stdout, stderr and exception text of each."""

    def __init__(self) -> None:
        self.runner = CliRunner()
        self.texts: list[str] = []
        self.stderr = ""

    def __call__(self, *args: str, code: int = 0, verbosity: str = "-v") -> Result:
        result = self.runner.invoke(app, [verbosity, *args])
        self.texts += [result.stdout, result.stderr, result.output]
        self.stderr += result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            assert result.exc_info is not None
            self.texts.append("".join(traceback.format_exception(*result.exc_info)))
            raise AssertionError(f"unexpected exception: {result.exception!r}")
        assert result.exit_code == code, f"exit {result.exit_code} != {code}:\n{result.output}"
        return result


@pytest.fixture
def runs(
    moto: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[Runs]:
    cli_environment(monkeypatch)
    caplog.set_level(logging.DEBUG)  # the root logger: every record of every library
    caplog.set_level(logging.DEBUG, logger="botocore")  # request and response bodies
    redact.forget()  # start from nothing: what is masked was registered by this run
    yield Runs()
    redact.forget()


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "stack.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def assert_no_leak(runs: Runs, caplog: pytest.LogCaptureFixture, values: list[str]) -> None:
    assert all(len(v) >= redact.MIN_LENGTH for v in values)
    for record in caplog.records:
        message = record.getMessage()
        for value in values:
            assert value not in message, f"{record.name}: {message[:300]}"
            assert value not in (record.exc_text or "")
    for value in values:
        assert value not in caplog.text
        for text in runs.texts:
            assert value not in text


def bodies_logged(caplog: pytest.LogCaptureFixture, operation: str) -> list[str]:
    """botocore's DEBUG records of the request for `operation` (their body is in them)."""
    want = f"OperationModel(name={operation})"
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "botocore.endpoint" and want in r.getMessage()
    ]


def test_every_command_with_verbose_logging_shows_no_secret(
    runs: Runs, cfg: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = str(cfg)
    runs("up", "-c", c)
    generated = stored_values()
    runs("status", "-c", c)
    doc = json.loads(runs("status", "--json", "-c", c).stdout)
    assert doc["healthy"] is True
    monkeypatch.setenv("OAUTH2_PROXY_CLIENT_SECRET", NEW_SECRET)
    runs("up", "-c", c, verbosity="-vv")  # a rotated client secret: PutSecretValue
    runs("down", "--yes", "-c", c)
    # (no `up` right after: moto refuses to re-create a cluster id within a minute)
    runs("down", "--delete-data", "--yes", "-c", c)  # the kept bucket and secrets, for good
    assert_no_leak(runs, caplog, [CLIENT_SECRET, CLIENT_ID, NEW_SECRET, *generated])

    # What was guarded against really happened, masked: the bodies were logged ...
    created = bodies_logged(caplog, "CreateSecret")
    assert len(created) == 4
    assert all(f'"SecretString": "{MASK}"' in body for body in created)
    rotated = bodies_logged(caplog, "PutSecretValue")
    assert len(rotated) == 1 and f'"SecretString": "{MASK}"' in rotated[0]
    assert bodies_logged(caplog, "CreateDBCluster")  # MasterUserPassword=...
    read_back = [
        r.getMessage()
        for r in caplog.records
        if r.name == "botocore.parsers" and '"SecretString"' in r.getMessage()
    ]
    assert read_back and all(f'"SecretString": "{MASK}"' in m for m in read_back)
    # ... and the verbose handler wrote them, formatted, to stderr: steps and AWS operations.
    assert "DEBUG mlflow_ecs.engine: up cli-test: done" in runs.stderr
    assert "DEBUG mlflow_ecs.aws: AWS call secrets-manager.CreateSecret" in runs.stderr
    assert f'"SecretString": "{MASK}"' in runs.stderr  # -vv: botocore's bodies, masked


def test_without_verbose_nothing_is_logged_to_the_terminal(runs: Runs, cfg: Path) -> None:
    runs("status", "-c", str(cfg), code=3)
    result = runs.runner.invoke(app, ["status", "-c", str(cfg)])
    assert result.exit_code == 3
    assert "DEBUG" not in result.stderr
    assert not [h for h in logging.getLogger("botocore").handlers if h.filters]  # removed


def fail_with(operation: str, message: str) -> Any:
    """A before-call hook: `operation` fails with an AWS error whose message is `message`."""

    def hook(event_name: str, **_: Any) -> Any:
        if event_name.endswith(f".{operation}"):
            error = {"Error": {"Code": "ValidationException", "Message": message}}
            return AWSResponse("https://aws.invalid", 400, {}, None), error
        return None

    return hook


def test_an_aws_error_quoting_a_secret_prints_it_masked(
    runs: Runs, cfg: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = str(cfg)
    hook = fail_with("CreateSecret", f"Value '{CLIENT_SECRET}' at 'secretString' is invalid")
    monkeypatch.setattr(awsmod, "GLOBAL_HOOKS", [("before-call.*.*", hook)])
    failed = runs("up", "-c", c, code=1)
    assert "Could not create the secret" in failed.stderr
    assert f"ValidationException: Value '{MASK}' at 'secretString'" in failed.stderr

    monkeypatch.setattr(awsmod, "GLOBAL_HOOKS", [])
    runs("up", "-c", c)  # resumes
    generated = stored_values()
    quoting = f"bad value {generated[0]} (was {NEW_SECRET}); cookie {generated[1]}"
    monkeypatch.setenv("OAUTH2_PROXY_CLIENT_SECRET", NEW_SECRET)
    monkeypatch.setattr(
        awsmod, "GLOBAL_HOOKS", [("before-call.*.*", fail_with("PutSecretValue", quoting))]
    )
    failed = runs("up", "-c", c, code=1, verbosity="-vv")
    assert f"bad value {MASK} (was {MASK}); cookie {MASK}" in failed.stderr
    assert_no_leak(runs, caplog, [CLIENT_SECRET, CLIENT_ID, NEW_SECRET, *generated])


def test_a_config_error_quoting_a_secret_prints_it_masked(
    runs: Runs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "bad.toml"  # the client secret pasted into the wrong key
    bad.write_text(
        f'[stack]\nname = "leaky"\n[oauth2_proxy]\nemail_domains = ["{CLIENT_SECRET}"]\n',
        encoding="utf-8",
    )
    result = runs("up", "-c", str(bad), code=2)
    assert f"oauth2_proxy -> email_domains: '{MASK}' is not an email domain" in result.stderr
    assert_no_leak(runs, caplog, [CLIENT_SECRET, CLIENT_ID])


def test_ctrl_c_during_up_prints_no_secret_and_up_continues(
    runs: Runs, cfg: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(sc: Any) -> None:
        raise KeyboardInterrupt

    original = engine.loadbalancer.ensure
    monkeypatch.setattr(engine.loadbalancer, "ensure", interrupted)
    result = runs("up", "-c", str(cfg), code=130)
    assert "run the same command again" in result.stderr
    monkeypatch.setattr(engine.loadbalancer, "ensure", original)
    runs("up", "-c", str(cfg))
    assert_no_leak(runs, caplog, [CLIENT_SECRET, CLIENT_ID, *stored_values()])


def test_an_unexpected_exception_shows_no_locals_and_no_secret(
    cfg: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """main(), as the console script runs it: typer's pretty traceback, without locals."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("TYPER_STANDARD_TRACEBACK", raising=False)
    monkeypatch.delenv("_TYPER_STANDARD_TRACEBACK", raising=False)
    marker = "only-in-a-local-variable-7d2f"

    def broken(*args: Any, **kwargs: Any) -> None:
        secret_copy = CLIENT_SECRET  # a local holding the secret, and one holding the marker
        local_marker = marker
        raise RuntimeError(f"bug near {secret_copy} and {len(local_marker)}")

    monkeypatch.setattr(climod, "load_config", broken)
    monkeypatch.setattr(sys, "argv", ["mlflow-ecs", "status", "-c", str(cfg)])
    assert climod.app.pretty_exceptions_show_locals is False
    with pytest.raises(SystemExit) as done:
        climod.main()
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert "RuntimeError" in err and "Traceback" in err  # typer's traceback was shown
    assert f"bug near {MASK} and" in err
    assert marker not in err  # no locals
    assert CLIENT_SECRET not in err


def test_the_installed_script_with_verbose_up_prints_no_secret(
    moto_server: str,  # noqa: F811 (the fixture, imported)
    tmp_path: Path,
) -> None:
    (tmp_path / "mlflow-ecs.toml").write_text(CONFIG, encoding="utf-8")
    env = client_env(tmp_path, moto_server)
    done = subprocess.run(
        [*console_script(), "-vv", "up"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DEBUG mlflow_ecs.aws: AWS call secrets-manager.CreateSecret" in done.stderr
    assert f'"SecretString": "{MASK}"' in done.stderr
    for value in [CLIENT_SECRET, CLIENT_ID, *stored_values(moto_server)]:
        assert value not in done.stdout
        assert value not in done.stderr
