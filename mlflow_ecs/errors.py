"""One error hierarchy. Each error carries its exit code and a hint (what to do next)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

EXIT_OK = 0
EXIT_AWS = 1
EXIT_USAGE = 2
EXIT_UNHEALTHY = 3


class MlflowEcsError(Exception):
    """Base error: a message for the user, a hint, and the process exit code."""

    exit_code = EXIT_AWS

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(MlflowEcsError):
    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """Every problem of a config at once, each naming its key path."""

    def __init__(self, problems: list[str], source: str = "config", hint: str = "") -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(
            f"{source}: {len(problems)} {noun}:\n{lines}",
            hint
            or "Fix the keys named above (see config.example.toml for every key) and run again.",
        )


class AwsError(MlflowEcsError):
    """An AWS call failed. Wrapped once, at the step boundary."""


class NotOwnedError(MlflowEcsError):
    """A same-named resource exists without this stack's ownership tag."""


class WaitTimeout(AwsError):
    """A bounded wait ran out; the message carries the last state seen."""


class StackUnhealthy(MlflowEcsError):
    exit_code = EXIT_UNHEALTHY


def error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def wrap_client_error(action: str, err: ClientError, hint: str = "") -> AwsError:
    """'Could not create the load balancer x: Code: message' plus a hint."""
    info = err.response.get("Error", {})
    code = info.get("Code", "Unknown")
    text = info.get("Message", str(err))
    if not hint:
        hint = _hint_for(code)
    return AwsError(f"Could not {action}: {code}: {text}", hint)


def _hint_for(code: str) -> str:
    if code in {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}:
        return "The AWS identity in use lacks a permission: grant it, or use another profile."
    if code in {"ExpiredToken", "ExpiredTokenException", "RequestExpired"}:
        return "Your AWS credentials have expired: refresh them and run again."
    if code.endswith("LimitExceeded") or code.endswith("QuotaExceeded"):
        return "An AWS quota is exhausted: raise it in Service Quotas or free some resources."
    return "Fix the cause above and run the same command again: every step is resumable."
