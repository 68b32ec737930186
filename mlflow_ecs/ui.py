"""The only place that talks to the terminal: live progress, tables, JSON, prompts, logs.

Diagnostics, progress and (with --verbose) logs go to stderr; data (status table or JSON) to
stdout. Everything written passes through redact.redact: no known secret value reaches the
terminal, whatever text (an AWS error message, a log record, a traceback) carries it.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import time
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .redact import RedactingFilter, redact, register

if TYPE_CHECKING:
    from .changes import Change, Plan
    from .engine import StackStatus
    from .errors import MlflowEcsError

STYLES = {
    "checking": "dim",
    "creating": "yellow",
    "updating": "yellow",
    "waiting": "cyan",
    "deleting": "yellow",
    "unchanged": "green",
    "created": "green",
    "updated": "green",
    "ready": "green",
    "deleted": "green",
    "kept": "blue",
    "absent": "dim",
    "failed": "bold red",
    "warning": "bold yellow",
}
DONE = {"unchanged", "created", "updated", "ready", "deleted", "kept", "absent", "failed"}


class _Redacting:
    """A text stream that masks known secret values in everything written to it."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # isatty, flush, encoding, fileno ...
        if name == "rich_proxied_file":  # rich would write to a live display's file directly
            raise AttributeError(name)
        return getattr(self._stream, name)


# No markup and no emoji codes: AWS text is printed as it is (an ARN's ":secret:" would turn
# into an emoji, a "[...]" into a style).
def stdout() -> Console:
    return Console(file=_Redacting(sys.stdout), soft_wrap=True, markup=False, emoji=False)  # type: ignore[arg-type]


def stderr() -> Console:
    return Console(file=_Redacting(sys.stderr), soft_wrap=True, markup=False, emoji=False)  # type: ignore[arg-type]


# --verbose: our own debug lines and each AWS operation's name; -vv adds botocore's debug
# (request and response bodies). Both are masked by RedactingFilter, on the handler that the
# records of both logger trees reach first (before any handler of the root logger).
VERBOSE_LEVELS = {
    1: {"mlflow_ecs": logging.DEBUG, "botocore": logging.INFO},
    2: {"mlflow_ecs": logging.DEBUG, "botocore": logging.DEBUG},
}


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time of each record."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(RedactingFilter())
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s"))

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        return None


_saved_levels: dict[str, int] = {}


def setup_logging(verbosity: int) -> None:
    """Log to stderr at the chosen verbosity (0: nothing, as before; each call replaces the
    last: a process that runs several commands gets one handler)."""
    for name, level in _saved_levels.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
            logger.removeHandler(handler)
    _saved_levels.clear()
    if verbosity <= 0:
        return
    handler = _StderrHandler()
    for name, level in VERBOSE_LEVELS[min(verbosity, 2)].items():
        logger = logging.getLogger(name)
        _saved_levels[name] = logger.level
        # Never less verbose than it already is (an embedding program may want more).
        logger.setLevel(min(level, logger.getEffectiveLevel()))
        logger.addHandler(handler)


def unexpected_error(exc: BaseException) -> None:
    """A bug's traceback, as typer shows it (never with locals), with secrets masked."""
    import typer.main

    buffer = io.StringIO()
    with redirect_stderr(buffer):
        typer.main.except_hook(type(exc), exc, exc.__traceback__)
    sys.stderr.write(redact(buffer.getvalue()))
    sys.stderr.flush()


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


@dataclass
class _Line:
    state: str
    detail: str
    started: float
    ended: float | None = None


@dataclass
class Progress:
    """A reporter: one line per resource, redrawn live on a terminal, appended otherwise."""

    console: Console = field(default_factory=stderr)
    lines: dict[str, _Line] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _live: Live | None = None

    def __enter__(self) -> Progress:
        return self  # the live display starts with the first line (after any plan or prompt)

    def _start(self) -> None:
        if self._live is None and self.console.is_terminal:
            self._live = Live(
                self._render(), console=self.console, refresh_per_second=8, transient=False
            )
            self._live.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(*exc)
            self._live = None

    def __call__(self, resource: str, state: str, detail: str = "") -> None:
        with self._lock:
            if state == "warning":
                self.warnings.append(detail)
                self.console.print(Text(f"WARNING: {detail}", style=STYLES["warning"]))
                return
            self._start()
            now = time.monotonic()
            line = self.lines.get(resource)
            if line is None or (line.ended is not None and state not in DONE):
                line = self.lines[resource] = _Line(state, detail, now)
            line.state, line.detail = state, detail or line.detail
            line.ended = now if state in DONE else None
            if self._live is not None:
                self._live.update(self._render())
            else:
                elapsed = f"{now - line.started:5.1f}s" if state in DONE else "      "
                self.console.print(
                    f"{elapsed} {resource:<22} {state:<10} {detail}", highlight=False
                )

    def _render(self) -> Table:
        table = Table.grid(padding=(0, 2))
        now = time.monotonic()
        for name, line in self.lines.items():
            elapsed = (line.ended or now) - line.started
            spinner = "" if line.state in DONE else "…"
            table.add_row(
                Text(f"{elapsed:5.1f}s", style="dim"),
                Text(name),
                Text(line.state + spinner, style=STYLES.get(line.state, "")),
                Text(line.detail, style="dim"),
            )
        return table


def show_error(err: MlflowEcsError) -> None:
    console = stderr()
    console.print(Text(f"Error: {err.message}", style="bold red"))
    if err.hint:
        console.print(Text(f"Hint: {err.hint}", style="yellow"))


def info(message: str, style: str = "") -> None:
    stderr().print(Text(message, style=style))


def status_table(st: StackStatus) -> None:
    out = stdout()
    table = Table(title=f"mlflow-ecs stack {st.stack!r} in {st.region}", title_justify="left")
    for col in ("resource", "name", "id", "state", "detail"):
        table.add_column(col, overflow="fold")
    for r in st.resources:
        style = "" if r.present else "red"
        table.add_row(r.kind, r.name, r.id or "-", Text(r.state, style=style or "green"), r.detail)
    out.print(table)
    if st.drift:
        out.print(
            Text(
                "Differs from the config (drift, or a change not applied yet); `up` puts it right:",
                style="bold yellow",
            )
        )
        change_lines(out, st.drift)
    elif st.drift_error:
        out.print(Text(f"Drift not checked: {st.drift_error}", style="yellow"))
    health = "healthy" if st.healthy else ("missing" if not st.exists else "NOT healthy")
    out.print(
        f"service: {st.running}/{st.desired} tasks running; stack is {health}", highlight=False
    )
    if st.url:
        out.print(f"url: {st.url}", highlight=False)


MARKS = {
    "create": ("+", "green"),
    "update": ("~", "yellow"),
    "replace": ("-/+", "bold red"),
    "delete": ("-", "red"),
    "unchanged": ("=", "dim"),
}


def _diff_lines(c: Change) -> list[str]:
    from .changes import short_diff

    lines = []
    for d in c.diffs:
        old, new = d.shown(d.old), d.shown(d.new)
        if not d.sensitive:
            old, new = short_diff(old, new)
        lines.append(f"{d.attribute}: {old} → {new}")
    return lines


def change_lines(console: Console, changes: list[Change], details: bool = True) -> None:
    """One line per resource (its action, marked as Terraform does), then, for an update,
    replacement or deletion, one line per differing attribute: old → new."""
    width = max((len(f"{c.kind} {c.name}") for c in changes), default=0)
    for c in changes:
        mark, style = MARKS[c.action]
        label = f"{c.kind} {c.name}"
        line = Text(f"{mark:>3} {label:<{width}}  ", style=style if c.changed else "dim")
        line.append(c.action, style=style)
        if c.note:
            line.append(f"  ({c.note})", style="dim")
        console.print(line, highlight=False)
        if c.blocked:
            console.print(Text(f"      up will not do this: {c.blocked}", style="bold red"))
        if details and c.action != "create":
            for text in _diff_lines(c):
                console.print(Text(f"      {text}"), highlight=False)


def plan_table(found: Plan, console: Console | None = None, only_changes: bool = False) -> None:
    """The plan (`mlflow-ecs plan` on stdout; `up` on stderr, only what changes)."""
    console = console or stdout()
    console.print(Text(f"Stack {found.stack!r} in {found.region}:", style="bold"))
    shown = [c for c in found.changes if c.changed] if only_changes else found.changes
    change_lines(console, shown)
    style = "bold yellow" if found.changed else "bold green"
    console.print(Text(redact(found.summary()), style=style))


def plan_json(found: Plan) -> None:
    sys.stdout.write(redact(json.dumps(found.to_dict(), indent=2, default=str)) + "\n")


def status_json(st: StackStatus) -> None:
    sys.stdout.write(redact(json.dumps(st.to_dict(), indent=2, default=str)) + "\n")


def confirm(question: str) -> bool:
    console = stderr()
    answer = console.input(f"{question} [y/N] ")
    return answer.strip().lower() in {"y", "yes"}


def prompt_secret(label: str) -> str:
    """Ask for a value without echoing it (the OAuth client secret)."""
    import getpass

    value = getpass.getpass(f"{label} (input hidden): ").strip()
    register(value)
    return value


def bullet_list(title: str, items: list[str]) -> None:
    console = stderr()
    console.print(Text(title, style="bold"))
    for item in items:
        console.print(f"  - {item}", highlight=False)


def export_lines(lines: list[str]) -> None:
    """Shell lines on stdout, flushed at once (a script may be reading them from a pipe)."""
    sys.stdout.write(redact("".join(f"{line}\n" for line in lines)))
    sys.stdout.flush()


def _shell_lines(script: str) -> list[str]:
    """One `sh -c` string, broken after each `;` and before each long option, for reading."""
    lines: list[str] = []
    statements = script.split("; ")
    for n, statement in enumerate(statements):
        parts = statement.split(" --")
        block = [parts[0]] + [f"  --{p}" for p in parts[1:]]
        block = [f"{line} \\" for line in block[:-1]] + [block[-1]]
        if n < len(statements) - 1:
            block[-1] += ";"
        lines += block
    return lines


def _container_rows(c: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("image", c.get("image", ""))]
    entry, command = c.get("entryPoint") or [], c.get("command") or []
    if entry:
        rows.append(("entryPoint", " ".join(entry)))
    if entry[-2:] == ["sh", "-c"] and len(command) == 1:
        rows += [("command", line) for line in _shell_lines(command[0])]
    else:
        rows += [("command", arg) for arg in command]
    for s in c.get("secrets") or []:
        rows.append(("secrets", f"{s['name']} ← {s['valueFrom']}"))
    ports = [
        f"{p['containerPort']}/{p.get('protocol', 'tcp')}" for p in c.get("portMappings") or []
    ]
    rows.append(("ports", ", ".join(ports) or "none published (reachable only inside the task)"))
    return rows


def task_containers(td: dict[str, Any]) -> None:
    """The containers of a registered task definition, readable: what runs, with which secrets
    (their Secrets Manager references: a task definition never holds a value) and which ports."""
    out = stdout()
    revision = str(td.get("taskDefinitionArn", "")).rsplit("/", 1)[-1]
    size = f"{td.get('cpu', '?')} CPU units, {td.get('memory', '?')} MiB"
    out.print(Text(f"Task definition {revision} ({size})", style="bold"))
    for c in td.get("containerDefinitions", []):
        out.print(Text(f"  container {c.get('name', '?')}", style="bold cyan"))
        previous = ""
        for label, value in _container_rows(c):
            shown = "" if label == previous else label
            out.print(Text(f"    {shown:<11} {value}"), highlight=False)
            previous = label


def heading(text: str) -> None:
    stderr().rule(Text(text, style="bold"), align="left")
