"""An embedded AWS emulator for `demo` and `sandbox`: moto's server on 127.0.0.1.

The only module that knows about moto. It configures what moto needs before it starts (AWS
managed IAM policies loaded, ECS services reporting running tasks, ACM certificates issued at
once) and points this process at it through the environment, the way botocore reads it
(``AWS_ENDPOINT_URL``). Everything else in the tool talks to it as to any AWS endpoint.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import threading
import urllib.request
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .errors import AwsError, UsageError

HOST = "127.0.0.1"
DEFAULT_REGION = "us-east-1"
FAKE_ACCESS_KEY_ID = "testing"
FAKE_SECRET_ACCESS_KEY = "testing"  # moto accepts any key
INSTALL_HINT = (
    "Install the emulator: pip install 'mlflow-ecs[sandbox]' "
    "(or pip install -e '.[sandbox]' from a checkout)."
)
# Settings that would send some calls elsewhere than the emulator, or use real credentials.
CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


@dataclass
class Sandbox:
    """A running emulator: its endpoint and region, and the environment that reaches it."""

    endpoint: str
    region: str
    running_tasks: int
    server: Any = field(repr=False)
    _saved: dict[str, str | None] = field(default_factory=dict, repr=False)
    _acm_wait_before: int = field(default=0, repr=False)

    def client_env(self) -> dict[str, str]:
        """What a shell needs to run `up` / `status` / `down` against this emulator."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
            "AWS_REGION": self.region,
        }

    def export_lines(self) -> list[str]:
        return [f"export {k}={shlex.quote(v)}" for k, v in self.client_env().items()]

    def stop(self, environ: MutableMapping[str, str] | None = None) -> None:
        """Stop the server and give the process its environment back."""
        self.server.stop()
        _acm_wait(self._acm_wait_before)
        env = os.environ if environ is None else environ
        for key, value in self._saved.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        self._saved.clear()


def moto_settings(running_tasks: int) -> dict[str, str]:
    """moto's knobs, read from the environment (some at import, some per request)."""
    return {
        "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",  # AmazonECSTaskExecutionRolePolicy exists
        "MOTO_ECS_SERVICE_RUNNING": str(max(running_tasks, 0)),  # services run their tasks
        "MOTO_ACM_VALIDATION_WAIT": "0",  # requested certificates are issued at once
    }


def _import_server() -> Any:
    try:
        import moto  # noqa: F401  (first: its server module may be imported already)
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    except ImportError as exc:
        missing = f" (no module {exc.name!r})" if exc.name else ""
        raise UsageError(
            f"The embedded AWS emulator is not installed: it needs moto's server{missing}.",
            INSTALL_HINT,
        ) from None
    return ThreadedMotoServer


def _acm_wait(seconds: int | None = None) -> int:
    """moto reads MOTO_ACM_VALIDATION_WAIT once, at import: set it here too; return the old."""
    from moto import settings

    before = int(settings.ACM_VALIDATION_WAIT)
    if seconds is not None:
        settings.ACM_VALIDATION_WAIT = seconds
    return before


def _swap(env: MutableMapping[str, str], values: Mapping[str, str | None]) -> dict[str, str | None]:
    """Set (or, for None, remove) variables; return what they were."""
    saved = {k: env.get(k) for k in values}
    for key, value in values.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return saved


def start(
    region: str = DEFAULT_REGION,
    port: int = 0,
    running_tasks: int = 1,
    environ: MutableMapping[str, str] | None = None,
) -> Sandbox:
    """Start moto's server on 127.0.0.1 (port 0: a free one) and point this process at it."""
    env = os.environ if environ is None else environ
    service_endpoints = [k for k in env if k.startswith("AWS_ENDPOINT_URL_")]
    saved = _swap(env, moto_settings(running_tasks))
    try:
        server_class = _import_server()
        _quiet_request_log()
        _check_port(port)
        server = server_class(ip_address=HOST, port=port, verbose=False)
        _start_bounded(server)
    except OSError as exc:
        _swap(env, saved)
        raise UsageError(
            f"Could not start the AWS emulator on {HOST}:{port}: {exc}",
            "Choose another --port, or 0 for a free one.",
        ) from None
    except BaseException:
        _swap(env, saved)
        raise
    host, bound = server.get_host_and_port()
    box = Sandbox(
        f"http://{host}:{bound}", region, running_tasks, server, _acm_wait_before=_acm_wait(0)
    )
    try:
        _reset(box.endpoint)
    except BaseException:
        box.stop(env)
        _swap(env, saved)
        raise
    cleared: dict[str, str | None] = dict.fromkeys([*CLEARED, *service_endpoints])
    box._saved = saved | _swap(env, cleared | box.client_env())
    return box


@contextmanager
def running(
    region: str = DEFAULT_REGION,
    port: int = 0,
    running_tasks: int = 1,
    environ: MutableMapping[str, str] | None = None,
) -> Iterator[Sandbox]:
    box = start(region, port, running_tasks, environ)
    try:
        yield box
    finally:
        box.stop(environ)


def _check_port(port: int) -> None:
    """Fail here if the port is taken: the server would fail in its own thread, unheard."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        probe.bind((HOST, port))


def _start_bounded(server: Any, timeout: float = 30.0) -> None:
    """server.start() waits for its thread without a bound; give it one."""
    starter = threading.Thread(target=server.start, daemon=True, name="sandbox-start")
    starter.start()
    starter.join(timeout)
    if starter.is_alive():
        raise AwsError(
            f"The AWS emulator did not start on {HOST} within {timeout:.0f}s.",
            "Run again, or choose another --port.",
        )


def _reset(endpoint: str) -> None:
    """Rebuild moto's backends so the settings above apply (managed policies load at reset)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
    except OSError as exc:
        raise AwsError(f"The AWS emulator at {endpoint} did not answer: {exc}") from None


def _quiet_request_log() -> None:
    """The emulator's HTTP server logs every request; the tool's own output is what counts."""
    log = logging.getLogger("werkzeug")
    log.setLevel(logging.ERROR)
    if not log.handlers:
        log.addHandler(logging.NullHandler())
