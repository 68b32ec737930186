"""Frozen settings from TOML + environment, validated once; derived names and tags.

Validation reports every problem at once, each naming its key path (``database -> max_capacity``),
the bad value and the fix. No AWS call happens here.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import redact
from .errors import ConfigError

OWNER_TAG = "mlflow-ecs:stack"
DEFAULT_CONFIG_FILE = "mlflow-ecs.toml"
CONFIG_ENV = "MLFLOW_ECS_CONFIG"
FILE_HINT = "Give a readable UTF-8 TOML file (config.example.toml shows every key) and run again."

DEFAULT_MLFLOW_IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2-full"
DEFAULT_PROXY_IMAGE = "quay.io/oauth2-proxy/oauth2-proxy:v7.12.0"
DEFAULT_ENGINE_VERSION = "8.0.mysql_aurora.3.08.2"
MLFLOW_PORT = 5000
DB_PORT = 3306

# CloudWatch Logs accepts exactly these retention periods (days).
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731,
    1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip

# Fargate task sizes: cpu units -> allowed memory (MiB).
FARGATE_SIZES: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
    8192: tuple(range(16384, 61441, 4096)),
    16384: tuple(range(32768, 122881, 8192)),
}


@dataclass(frozen=True)
class Stack:
    name: str
    region: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Network:
    vpc_id: str = ""
    public_subnet_ids: tuple[str, ...] = ()
    private_subnet_ids: tuple[str, ...] = ()
    cidr: str = "10.42.0.0/16"
    allowed_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    task_subnets: str = "public"


@dataclass(frozen=True)
class Artifacts:
    bucket: str = ""
    path: str = "mlflow"
    mode: str = "direct"


@dataclass(frozen=True)
class Database:
    engine_version: str = DEFAULT_ENGINE_VERSION
    name: str = "mlflow"
    username: str = "mlflow"
    min_capacity: float = 0.5
    max_capacity: float = 2.0
    deletion_protection: bool = False
    backup_retention_days: int = 7


@dataclass(frozen=True)
class Mlflow:
    image: str = DEFAULT_MLFLOW_IMAGE
    port: int = MLFLOW_PORT
    cpu: int = 1024
    memory: int = 2048
    workers: int = 2
    gunicorn_opts: str = ""


@dataclass(frozen=True)
class OAuth2Proxy:
    image: str = DEFAULT_PROXY_IMAGE
    port: int = 4180
    provider: str = "google"
    email_domains: tuple[str, ...] = ()
    client_id: str = ""
    extra_jwt_issuers: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadBalancer:
    certificate_arn: str = ""
    domain: str = ""
    internal: bool = False
    idle_timeout: int = 60


@dataclass(frozen=True)
class Service:
    desired_count: int = 1
    log_retention_days: int = 30
    health_check_grace_seconds: int = 120


@dataclass(frozen=True)
class Secrets:
    """Values that come from the environment only. Never printed (repr hides them)."""

    client_id: str = field(default="", repr=False)
    client_secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class Config:
    stack: Stack
    network: Network = field(default_factory=Network)
    artifacts: Artifacts = field(default_factory=Artifacts)
    database: Database = field(default_factory=Database)
    mlflow: Mlflow = field(default_factory=Mlflow)
    oauth2_proxy: OAuth2Proxy = field(default_factory=OAuth2Proxy)
    load_balancer: LoadBalancer = field(default_factory=LoadBalancer)
    service: Service = field(default_factory=Service)
    secrets: Secrets = field(default_factory=Secrets)
    source: str = "config"

    @property
    def tags(self) -> dict[str, str]:
        """User tags plus the ownership tag (which always wins)."""
        return {**self.stack.tags, OWNER_TAG: self.stack.name}

    def names(self, account_id: str, region: str) -> Names:
        return Names.derive(self, account_id, region)


@dataclass(frozen=True)
class Names:
    """Every AWS name of a stack, derived from ``stack.name`` (the bucket may be given)."""

    stack: str
    vpc: str
    sg_alb: str
    sg_tasks: str
    sg_db: str
    bucket: str
    secret_db_password: str
    secret_client_id: str
    secret_client_secret: str
    secret_cookie: str
    db_subnet_group: str
    db_cluster: str
    db_instance: str
    execution_role: str
    task_role: str
    log_group: str
    ecs_cluster: str
    alb: str
    target_group: str
    task_family: str
    service: str
    snapshot_prefix: str

    @classmethod
    def derive(cls, cfg: Config, account_id: str, region: str) -> Names:
        s = cfg.stack.name
        return cls(
            stack=s,
            vpc=s,
            sg_alb=f"{s}-alb",
            sg_tasks=f"{s}-tasks",
            sg_db=f"{s}-db",
            bucket=cfg.artifacts.bucket or f"{s}-artifacts-{account_id}-{region}",
            secret_db_password=f"{s}/db-password",
            secret_client_id=f"{s}/oauth2-client-id",
            secret_client_secret=f"{s}/oauth2-client-secret",
            secret_cookie=f"{s}/oauth2-cookie-secret",
            db_subnet_group=f"{s}-db",
            db_cluster=f"{s}-db",
            db_instance=f"{s}-db-writer",
            execution_role=f"{s}-execution",
            task_role=f"{s}-task",
            log_group=f"/mlflow-ecs/{s}",
            ecs_cluster=s,
            alb=f"{s}-alb",
            target_group=f"{s}-proxy",
            task_family=f"{s}-mlflow",
            service="mlflow",
            snapshot_prefix=f"{s}-db-final-",
        )


# ---------------------------------------------------------------------------------------------
# Validators: each returns None when fine, else "bad value ...: what to do".

Check = Callable[[Any], str | None]

_STACK_NAME = re.compile(r"^[a-z][a-z0-9-]{2,23}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
_ENGINE = re.compile(r"^8\.0\.mysql_aurora\.3\.(\d{2})\.(\d+)$")
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,15}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_ACM_ARN = re.compile(r"^arn:aws[a-z-]*:acm:([a-z0-9-]+):\d{12}:certificate/[A-Za-z0-9-]+$")
_VPC_ID = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_TAG_KEY = re.compile(r"^[\w .:/=+\-@]{1,128}$")
_PROVIDERS = (
    "google", "github", "gitlab", "azure", "entra-id", "oidc", "keycloak-oidc",
    "login.gov", "bitbucket", "digitalocean", "linkedin", "nextcloud", "facebook", "adfs",
)  # fmt: skip


def region_problem(v: str) -> str | None:
    """Why a region name (from --region or a profile) is not one AWS has, or None."""
    return _region(v)


def _stack_name(v: str) -> str | None:
    if _STACK_NAME.match(v) and not v.endswith("-") and "--" not in v:
        return None
    return (
        f"{v!r} is not a valid stack name: use 3-24 lowercase letters, digits and single "
        "hyphens, starting with a letter (e.g. 'mlflow-prod')"
    )


def _region(v: str) -> str | None:
    if not v:
        return None
    if not _REGION.match(v):
        return f"{v!r} is not an AWS region name: use one like 'eu-west-1'"
    from botocore.loaders import create_loader

    try:  # botocore's small partitions file (the endpoints file costs ~0.2 s to parse)
        partitions = create_loader().load_data("partitions")["partitions"]
        known = {r for p in partitions for r in p.get("regions", {}) if not r.endswith("-global")}
    except Exception:  # an unreadable data file must not stop us: AWS will say if it is wrong
        return None
    if known and v not in known:
        return f"{v!r} is not a known AWS region: use one like 'eu-west-1'"
    return None


def _cidr(v: str) -> str | None:
    try:
        ipaddress.IPv4Network(v, strict=True)
    except ValueError as exc:
        return f"{v!r} is not an IPv4 CIDR block ({exc}): write it like '10.0.0.0/16'"
    return None


def _vpc_cidr(v: str) -> str | None:
    if err := _cidr(v):
        return err
    prefix = ipaddress.IPv4Network(v).prefixlen
    if not 16 <= prefix <= 24:
        return f"{v!r} has a /{prefix} prefix: a VPC needs /16 to /24 (e.g. '10.42.0.0/16')"
    return None


def bucket_name_problem(v: str) -> str | None:
    """S3 general-purpose bucket naming rules."""
    if not v:
        return None
    bad = (
        not 3 <= len(v) <= 63
        or not re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", v)
        or ".." in v
        or ".-" in v
        or "-." in v
        or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", v)
        or v.startswith(("xn--", "sthree-", "amzn-s3-demo-"))
        or v.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"))
    )
    if bad:
        return (
            f"{v!r} is not a valid S3 bucket name: use 3-63 lowercase letters, digits and "
            "hyphens, starting and ending with a letter or digit (or leave it empty to derive one)"
        )
    return None


def _path(v: str) -> str | None:
    if v.startswith("/") or v.endswith("/") or "//" in v or not re.fullmatch(r"[\w./-]*", v):
        return (
            f"{v!r} is not a usable S3 key prefix: use letters, digits and '/', "
            "no leading or trailing '/'"
        )
    return None


def _one_of(*choices: str) -> Check:
    def check(v: str) -> str | None:
        if v in choices:
            return None
        return f"{v!r} is not allowed: use one of {', '.join(repr(c) for c in choices)}"

    return check


def _int_range(lo: int, hi: int) -> Check:
    def check(v: int) -> str | None:
        return None if lo <= v <= hi else f"{v} is out of range: use {lo} to {hi}"

    return check


def _capacity(v: float) -> str | None:
    if 0 <= v <= 256 and float(v * 2).is_integer():
        return None
    return f"{v} is not an Aurora Serverless v2 capacity: use 0 to 256 in steps of 0.5"


def _engine(v: str) -> str | None:
    if _ENGINE.match(v):
        return None
    return f"{v!r} is not an Aurora MySQL 3 version: use one like {DEFAULT_ENGINE_VERSION!r}"


def _ident(v: str) -> str | None:
    if _IDENT.match(v) and v.lower() not in {"admin", "root", "rdsadmin", "mysql"}:
        return None
    return (
        f"{v!r} cannot be used: use 1-16 letters, digits or '_', starting with a letter "
        "(and not a reserved name like 'admin')"
    )


def _retention(v: int) -> str | None:
    if v in LOG_RETENTION_DAYS:
        return None
    return f"{v} is not a retention CloudWatch accepts: use one of {list(LOG_RETENTION_DAYS)}"


def _image(v: str) -> str | None:
    if v and " " not in v and not v.startswith(("-", ":")):
        return None
    return f"{v!r} is not a container image reference: use e.g. 'ghcr.io/org/image:tag'"


def _domain(v: str) -> str | None:
    if not v or _DOMAIN.match(v):
        return None
    return f"{v!r} is not a DNS name: use a lowercase name like 'mlflow.example.com'"


def _certificate(v: str) -> str | None:
    if not v or _ACM_ARN.match(v):
        return None
    return f"{v!r} is not an ACM certificate ARN: use 'arn:aws:acm:REGION:ACCOUNT:certificate/ID'"


def _each(check: Check) -> Check:
    def run(values: list[Any]) -> str | None:
        for item in values:
            if err := check(item):
                return err
        return None

    return run


def _pattern(regex: re.Pattern[str], example: str) -> Check:
    def check(v: str) -> str | None:
        return None if regex.match(v) else f"{v!r} is malformed: use an id like {example!r}"

    return check


def _email_domain(v: str) -> str | None:
    if v == "*" or _DOMAIN.match(v):
        return None
    return f"{v!r} is not an email domain: use e.g. 'example.com' (or '*' for everyone)"


def _issuer(v: str) -> str | None:
    issuer, sep, audience = v.partition("=")
    if sep and issuer.startswith("https://") and audience:
        return None
    return f"{v!r} is not ISSUER=AUDIENCE: use e.g. 'https://accounts.google.com=CLIENT_ID'"


def _tags(v: dict[str, Any]) -> str | None:
    for key, value in v.items():
        if not isinstance(value, str):
            return f"tag {key!r} has a {type(value).__name__} value: tag values must be strings"
        if key.startswith("aws:") or key == OWNER_TAG or not _TAG_KEY.match(key):
            return f"tag key {key!r} cannot be used: avoid 'aws:' and {OWNER_TAG!r}"
        if len(value) > 256:
            return f"tag {key!r} is longer than 256 characters"
    return None


# ---------------------------------------------------------------------------------------------
# Schema: section -> key -> (type, check). Defaults come from the dataclasses.


@dataclass(frozen=True)
class Key:
    kind: type | tuple[type, ...]
    check: Check | None = None
    item: type | None = None  # element type of a list


SCHEMA: dict[str, dict[str, Key]] = {
    "stack": {
        "name": Key(str, _stack_name),
        "region": Key(str, _region),
        "tags": Key(dict, _tags),
    },
    "network": {
        "vpc_id": Key(str, lambda v: _pattern(_VPC_ID, "vpc-0123456789abcdef0")(v) if v else None),
        "public_subnet_ids": Key(list, _each(_pattern(_SUBNET_ID, "subnet-0123abcd")), str),
        "private_subnet_ids": Key(list, _each(_pattern(_SUBNET_ID, "subnet-0123abcd")), str),
        "cidr": Key(str, _vpc_cidr),
        "allowed_cidrs": Key(list, _each(_cidr), str),
        "task_subnets": Key(str, _one_of("public", "private")),
    },
    "artifacts": {
        "bucket": Key(str, bucket_name_problem),
        "path": Key(str, _path),
        "mode": Key(str, _one_of("direct", "proxied")),
    },
    "database": {
        "engine_version": Key(str, _engine),
        "name": Key(str, _ident),
        "username": Key(str, _ident),
        "min_capacity": Key((int, float), _capacity),
        "max_capacity": Key((int, float), _capacity),
        "deletion_protection": Key(bool),
        "backup_retention_days": Key(int, _int_range(1, 35)),
    },
    "mlflow": {
        "image": Key(str, _image),
        "port": Key(int, _int_range(1024, 65535)),
        "cpu": Key(int),
        "memory": Key(int),
        "workers": Key(int, _int_range(1, 64)),
        "gunicorn_opts": Key(str),
    },
    "oauth2_proxy": {
        "image": Key(str, _image),
        "port": Key(int, _int_range(1024, 65535)),
        "provider": Key(str, _one_of(*_PROVIDERS)),
        "email_domains": Key(list, _each(_email_domain), str),
        "client_id": Key(str),
        "extra_jwt_issuers": Key(list, _each(_issuer), str),
    },
    "load_balancer": {
        "certificate_arn": Key(str, _certificate),
        "domain": Key(str, _domain),
        "internal": Key(bool),
        "idle_timeout": Key(int, _int_range(1, 4000)),
    },
    "service": {
        "desired_count": Key(int, _int_range(0, 20)),
        "log_retention_days": Key(int, _retention),
        "health_check_grace_seconds": Key(int, _int_range(0, 3600)),
    },
}

SECTIONS: dict[str, type] = {
    "stack": Stack,
    "network": Network,
    "artifacts": Artifacts,
    "database": Database,
    "mlflow": Mlflow,
    "oauth2_proxy": OAuth2Proxy,
    "load_balancer": LoadBalancer,
    "service": Service,
}


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    names |= {list: "a list", dict: "a table"}
    if isinstance(kind, tuple):
        return "a number"
    return names.get(kind, kind.__name__)


def _is_type(value: Any, kind: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool) and kind is not bool:
        return False  # TOML true is not a number
    return isinstance(value, kind)


def _check_section(section: str, raw: Any, problems: list[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        problems.append(f"{section}: {raw!r} must be a table ([{section}])")
        return {}
    values: dict[str, Any] = {}
    schema = SCHEMA[section]
    for key, value in raw.items():
        where = f"{section} -> {key}"
        spec = schema.get(key)
        if spec is None:
            known = ", ".join(schema)
            problems.append(f"{where}: unknown key (did you mean one of: {known}?)")
            continue
        if not _is_type(value, spec.kind):
            problems.append(f"{where}: {value!r} must be {_type_name(spec.kind)}")
            continue
        if spec.item and not all(_is_type(v, spec.item) for v in value):
            problems.append(f"{where}: every item of {value!r} must be {_type_name(spec.item)}")
            continue
        if spec.check and (err := spec.check(value)):
            problems.append(f"{where}: {err}")
            continue
        values[key] = tuple(value) if isinstance(value, list) else value
    return values


def _cross_checks(cfg: Config, problems: list[str]) -> None:
    m, d, n, lb = cfg.mlflow, cfg.database, cfg.network, cfg.load_balancer
    if m.cpu not in FARGATE_SIZES:
        problems.append(
            f"mlflow -> cpu: {m.cpu} is not a Fargate size: use one of {list(FARGATE_SIZES)}"
        )
    elif m.memory not in FARGATE_SIZES[m.cpu]:
        allowed = FARGATE_SIZES[m.cpu]
        problems.append(
            f"mlflow -> memory: {m.memory} MiB does not fit cpu {m.cpu}: use "
            f"{allowed[0]} to {allowed[-1]} (in steps of {allowed[1] - allowed[0]})"
        )
    if m.port == cfg.oauth2_proxy.port:
        problems.append(f"oauth2_proxy -> port: {m.port} must differ from mlflow -> port")
    if d.max_capacity < 1:
        problems.append(f"database -> max_capacity: {d.max_capacity} is below 1: use 1 to 256")
    if d.min_capacity > d.max_capacity:
        problems.append(
            f"database -> min_capacity: {d.min_capacity} is above max_capacity "
            f"{d.max_capacity}: lower it or raise max_capacity"
        )
    found = _ENGINE.match(d.engine_version)
    if d.min_capacity == 0 and found and (int(found[1]), int(found[2])) < (8, 0):
        problems.append(
            "database -> min_capacity: 0 (auto-pause) needs engine_version "
            "8.0.mysql_aurora.3.08.0 or later: raise engine_version or use 0.5"
        )
    given = n.vpc_id or n.public_subnet_ids or n.private_subnet_ids
    if given and not (n.vpc_id and n.public_subnet_ids and n.private_subnet_ids):
        shown = repr(n.vpc_id) if n.vpc_id else "missing"
        problems.append(
            f"network -> vpc_id: {shown}: give vpc_id together with public_subnet_ids and "
            "private_subnet_ids (two or more each), or none of them to create a VPC"
        )
    for key in ("public_subnet_ids", "private_subnet_ids"):
        ids = getattr(n, key)
        if n.vpc_id and len(set(ids)) < 2:
            problems.append(
                f"network -> {key}: {list(ids)} needs at least two distinct subnets in different "
                "availability zones (the load balancer and Aurora both require it)"
            )
    if lb.certificate_arn and cfg.stack.region:
        found_region = _ACM_ARN.match(lb.certificate_arn)
        if found_region and found_region[1] != cfg.stack.region:
            problems.append(
                f"load_balancer -> certificate_arn: the certificate is in {found_region[1]} but "
                f"the stack is in {cfg.stack.region}: an ALB needs a certificate from its region"
            )
    if lb.domain and not lb.certificate_arn:
        problems.append(
            f"load_balancer -> certificate_arn: missing: the domain {lb.domain!r} needs a "
            "certificate (HTTPS) for the browser login: give certificate_arn, or leave domain empty"
        )


def parse(data: Mapping[str, Any], env: Mapping[str, str], source: str = "config") -> Config:
    """Validate a parsed TOML document and the environment; raise ConfigError with all problems."""
    # Known before any message is built: an error may quote a value a user mistyped.
    redact.register_environment(env)
    problems: list[str] = []
    sections: dict[str, dict[str, Any]] = {}
    for section, raw in data.items():
        if section not in SCHEMA:
            known = ", ".join(SCHEMA)
            problems.append(f"{section}: unknown section (known sections: {known})")
            continue
        sections[section] = _check_section(section, raw, problems)
    stack_values = sections.get("stack", {})
    if "name" not in stack_values and not any(p.startswith("stack -> name") for p in problems):
        problems.append("stack -> name: missing: every stack needs a name, e.g. name = 'mlflow'")
    if problems:
        raise ConfigError(problems, source)

    built = {name: SECTIONS[name](**sections.get(name, {})) for name in SECTIONS}
    env_var, env_region = "", ""
    if not stack_values.get("region"):
        env_var = "AWS_REGION" if env.get("AWS_REGION") else "AWS_DEFAULT_REGION"
        env_region = env.get(env_var) or ""
    secrets = Secrets(
        client_id=built["oauth2_proxy"].client_id or env.get("OAUTH2_PROXY_CLIENT_ID", ""),
        client_secret=env.get("OAUTH2_PROXY_CLIENT_SECRET", ""),
    )
    redact.register(secrets.client_id)  # never shown from now on
    cfg = Config(**built, secrets=secrets, source=source)
    if env_region and (err := _region(env_region)):
        problems.append(f"{env_var}: {err}")
    _cross_checks(cfg, problems)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def config_path(given: str | None, env: Mapping[str, str]) -> Path:
    return Path(given or env.get(CONFIG_ENV) or DEFAULT_CONFIG_FILE)


def load(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML config file."""
    env = os.environ if env is None else env
    where = f"pass --config PATH, set {CONFIG_ENV}, or copy config.example.toml"
    if path.is_dir():
        raise ConfigError(
            [f"is a directory, not a config file ({where})"], str(path), FILE_HINT
        ) from None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"no such file ({where})"], str(path), FILE_HINT) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"cannot be read: not UTF-8 ({exc.reason} at byte {exc.start}): save it as UTF-8"],
            str(path),
            FILE_HINT,
        ) from None
    except OSError as exc:
        raise ConfigError(
            [f"cannot be read ({exc.strerror}): check its permissions"], str(path), FILE_HINT
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            [f"is not valid TOML: {exc}: fix the syntax there"], str(path), FILE_HINT
        ) from None
    return parse(data, env, str(path))


def with_region(cfg: Config, region: str) -> Config:
    """The config with the region actually in use (flag > stack.region > environment)."""
    from dataclasses import replace

    found = _ACM_ARN.match(cfg.load_balancer.certificate_arn)
    if found and found[1] != region:
        raise ConfigError(
            [
                f"load_balancer -> certificate_arn: the certificate is in {found[1]} but the "
                f"stack runs in {region}: an ALB needs a certificate from its own region"
            ],
            cfg.source,
        )
    return replace(cfg, stack=replace(cfg.stack, region=region))
