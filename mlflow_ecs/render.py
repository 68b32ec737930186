"""Pure builders of every document the tool sends to AWS. No AWS calls, no I/O.

Tests pin these without moto; the steps compare what AWS holds against them.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from .config import DB_PORT, Config, Names

MLFLOW = "mlflow"
PROXY = "oauth2-proxy"
PROXY_MEMORY_RESERVATION = 64
UPLOAD_TIMEOUT_SECONDS = 900  # proxied artifacts pass through the proxy and the ALB
MLFLOW_STOP_TIMEOUT = 60  # uvicorn exits ~6 s after SIGTERM, gunicorn ~20 s; Fargate allows 120
EXECUTION_POLICY_ARN = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"

# Percent-encode the password inside the container (SQLAlchemy decodes %XX). The image has Python.
ENCODE_PASSWORD = (
    'python -c \'import os,urllib.parse as u;print(u.quote(os.environ["DB_PASSWORD"],safe=""))\''
)


@dataclass(frozen=True)
class TaskRefs:
    """What the task definition refers to that only AWS knows."""

    region: str
    execution_role_arn: str
    task_role_arn: str
    db_host: str
    alb_dns: str
    secret_arns: dict[str, str]  # secret name -> ARN


def public_url(cfg: Config, alb_dns: str) -> str:
    lb = cfg.load_balancer
    if lb.domain:
        return f"https://{lb.domain}"
    scheme = "https" if lb.certificate_arn else "http"
    return f"{scheme}://{alb_dns}" if alb_dns else ""


def artifact_uri(cfg: Config, names: Names) -> str:
    path = cfg.artifacts.path.strip("/")
    return f"s3://{names.bucket}/{path}" if path else f"s3://{names.bucket}"


def mlflow_command(cfg: Config, names: Names) -> str:
    """The one shell string run by ``sh -c``: encode the password, then exec mlflow (PID 1)."""
    m = cfg.mlflow
    uri = '"mysql+pymysql://${DB_USER}:${DB_PASSWORD_URL}@${DB_HOST}:${DB_PORT}/${DB_NAME}"'
    args = [
        "exec mlflow server",
        f"--backend-store-uri {uri}",
        "--host 127.0.0.1",
        f"--port {m.port}",
    ]
    if cfg.artifacts.mode == "proxied":
        args += ["--serve-artifacts", f"--artifacts-destination {artifact_uri(cfg, names)}"]
    else:
        args += ["--no-serve-artifacts", f"--default-artifact-root {artifact_uri(cfg, names)}"]
    args.append(f"--workers {m.workers}")
    if m.gunicorn_opts:
        args.append(f"--gunicorn-opts {shlex.quote(m.gunicorn_opts)}")
    return f"DB_PASSWORD_URL=$({ENCODE_PASSWORD}) || exit 1; " + " ".join(args)


def allowed_hosts(cfg: Config, alb_dns: str) -> list[str]:
    hosts = [h for h in (cfg.load_balancer.domain, alb_dns) if h]
    return [*hosts, "localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*"]


def allowed_origins(cfg: Config, alb_dns: str) -> list[str]:
    origins = []
    if cfg.load_balancer.domain:
        origins.append(f"https://{cfg.load_balancer.domain}")
    if alb_dns:
        scheme = "https" if cfg.load_balancer.certificate_arn else "http"
        origins.append(f"{scheme}://{alb_dns}")
    return origins


def _env(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in sorted(values.items())]


def _secrets(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "valueFrom": v} for k, v in sorted(values.items())]


def _logs(names: Names, region: str, prefix: str) -> dict[str, Any]:
    return {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": names.log_group,
            "awslogs-region": region,
            "awslogs-stream-prefix": prefix,
        },
    }


def mlflow_container(cfg: Config, names: Names, refs: TaskRefs) -> dict[str, Any]:
    env = {
        "DB_USER": cfg.database.username,
        "DB_HOST": refs.db_host,
        "DB_PORT": str(DB_PORT),
        "DB_NAME": cfg.database.name,
        "AWS_DEFAULT_REGION": refs.region,
        "MLFLOW_SERVER_ALLOWED_HOSTS": ",".join(allowed_hosts(cfg, refs.alb_dns)),
    }
    if origins := allowed_origins(cfg, refs.alb_dns):
        env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"] = ",".join(origins)
    if cfg.database.min_capacity == 0:
        env["MLFLOW_SQLALCHEMYSTORE_POOLCLASS"] = "NullPool"  # let Aurora auto-pause
    health = (
        'python -c "import urllib.request;'
        f"urllib.request.urlopen('http://127.0.0.1:{cfg.mlflow.port}/health',timeout=4)\""
        " || exit 1"
    )
    return {
        "name": MLFLOW,
        "image": cfg.mlflow.image,
        "essential": True,
        "entryPoint": ["sh", "-c"],
        "command": [mlflow_command(cfg, names)],
        "environment": _env(env),
        "secrets": _secrets({"DB_PASSWORD": refs.secret_arns[names.secret_db_password]}),
        "memoryReservation": max(cfg.mlflow.memory - PROXY_MEMORY_RESERVATION * 2, 256),
        "stopTimeout": MLFLOW_STOP_TIMEOUT,
        "healthCheck": {
            "command": ["CMD-SHELL", health],
            "interval": 15,
            "timeout": 5,
            "retries": 3,
            "startPeriod": 60,
        },
        "logConfiguration": _logs(names, refs.region, MLFLOW),
    }


def proxy_args(cfg: Config, names: Names) -> list[str]:
    """oauth2-proxy's flags (its image is distroless: these are the command after its binary)."""
    p, lb = cfg.oauth2_proxy, cfg.load_balancer
    args = [
        f"--http-address=0.0.0.0:{p.port}",
        f"--upstream=http://127.0.0.1:{cfg.mlflow.port}/",
        "--reverse-proxy=true",
        f"--provider={p.provider}",
        *[f"--email-domain={d}" for d in effective_email_domains(cfg)],
        "--skip-auth-route=GET=^/health$",
        "--skip-provider-button=true",
        f"--cookie-secure={'true' if lb.certificate_arn else 'false'}",
        "--skip-jwt-bearer-tokens=true",
        *[f"--extra-jwt-issuers={i}" for i in p.extra_jwt_issuers],
    ]
    if lb.domain:
        args.append(f"--redirect-url=https://{lb.domain}/oauth2/callback")
    if cfg.artifacts.mode == "proxied":
        args.append(f"--upstream-timeout={UPLOAD_TIMEOUT_SECONDS}s")
    return args


def effective_email_domains(cfg: Config) -> tuple[str, ...]:
    return cfg.oauth2_proxy.email_domains or ("*",)


def proxy_container(cfg: Config, names: Names, refs: TaskRefs) -> dict[str, Any]:
    secret = refs.secret_arns
    return {
        "name": PROXY,
        "image": cfg.oauth2_proxy.image,
        "essential": True,
        "command": proxy_args(cfg, names),
        "portMappings": [
            {
                "containerPort": cfg.oauth2_proxy.port,
                "hostPort": cfg.oauth2_proxy.port,
                "protocol": "tcp",
            }
        ],
        "secrets": _secrets(
            {
                "OAUTH2_PROXY_CLIENT_ID": secret[names.secret_client_id],
                "OAUTH2_PROXY_CLIENT_SECRET": secret[names.secret_client_secret],
                "OAUTH2_PROXY_COOKIE_SECRET": secret[names.secret_cookie],
            }
        ),
        "memoryReservation": PROXY_MEMORY_RESERVATION,
        "dependsOn": [{"containerName": MLFLOW, "condition": "HEALTHY"}],
        "logConfiguration": _logs(names, refs.region, PROXY),
    }


def task_definition(cfg: Config, names: Names, refs: TaskRefs) -> dict[str, Any]:
    """Arguments of ecs.register_task_definition (tags added by the step)."""
    return {
        "family": names.task_family,
        "requiresCompatibilities": ["FARGATE"],
        "networkMode": "awsvpc",
        "cpu": str(cfg.mlflow.cpu),
        "memory": str(cfg.mlflow.memory),
        "executionRoleArn": refs.execution_role_arn,
        "taskRoleArn": refs.task_role_arn,
        "runtimePlatform": {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"},
        "containerDefinitions": [
            mlflow_container(cfg, names, refs),
            proxy_container(cfg, names, refs),
        ],
    }


# --- IAM -------------------------------------------------------------------------------------


def ecs_tasks_trust_policy(account_id: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
            }
        ],
    }


def execution_policy(secret_arns: list[str]) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadStackSecrets",
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": sorted(secret_arns),
            }
        ],
    }


def task_policy(bucket: str, path: str) -> dict[str, Any]:
    prefix = path.strip("/")
    objects = f"arn:aws:s3:::{bucket}/{prefix}/*" if prefix else f"arn:aws:s3:::{bucket}/*"
    list_prefixes = [prefix, f"{prefix}/*"] if prefix else ["*"]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ListArtifactPrefix",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{bucket}",
                "Condition": {"StringLike": {"s3:prefix": list_prefixes}},
            },
            {
                "Sid": "ReadWriteArtifacts",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": objects,
            },
        ],
    }


def artifact_location(policy: Any) -> str:
    """'s3://bucket/prefix/*' of a task policy made by task_policy ('' if it is not one)."""
    statements = policy.get("Statement", []) if isinstance(policy, dict) else []
    for st in statements:
        if st.get("Sid") == "ReadWriteArtifacts" and isinstance(st.get("Resource"), str):
            return "s3://" + str(st["Resource"]).removeprefix("arn:aws:s3:::")
    return ""


# --- S3 --------------------------------------------------------------------------------------


def bucket_policy(bucket: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}

BUCKET_ENCRYPTION = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


# --- Security groups -------------------------------------------------------------------------

# A rule: (protocol, from_port, to_port, source) where source is a CIDR or a group id.
Rule = tuple[str, int, int, str]


def alb_rules(cfg: Config) -> set[Rule]:
    ports = [80, 443] if cfg.load_balancer.certificate_arn else [80]
    return {("tcp", p, p, c) for p in ports for c in cfg.network.allowed_cidrs}


def task_rules(cfg: Config, alb_sg: str) -> set[Rule]:
    port = cfg.oauth2_proxy.port
    return {("tcp", port, port, alb_sg)}


def db_rules(tasks_sg: str) -> set[Rule]:
    return {("tcp", DB_PORT, DB_PORT, tasks_sg)}


def ip_permissions(rules: set[Rule]) -> list[dict[str, Any]]:
    perms = []
    for proto, lo, hi, source in sorted(rules):
        perm: dict[str, Any] = {"IpProtocol": proto, "FromPort": lo, "ToPort": hi}
        if source.startswith("sg-"):
            perm["UserIdGroupPairs"] = [{"GroupId": source}]
        else:
            perm["IpRanges"] = [{"CidrIp": source}]
        perms.append(perm)
    return perms


def rules_of(permissions: list[dict[str, Any]]) -> set[Rule]:
    """The inverse of ip_permissions, for what describe_security_groups returns."""
    rules: set[Rule] = set()
    for perm in permissions:
        proto = str(perm.get("IpProtocol"))
        lo, hi = int(perm.get("FromPort", -1)), int(perm.get("ToPort", -1))
        for r in perm.get("IpRanges", []):
            rules.add((proto, lo, hi, r["CidrIp"]))
        for g in perm.get("UserIdGroupPairs", []):
            rules.add((proto, lo, hi, g["GroupId"]))
        for r6 in perm.get("Ipv6Ranges", []):
            rules.add((proto, lo, hi, r6["CidrIpv6"]))
    return rules


# --- Load balancer ---------------------------------------------------------------------------


def idle_timeout(cfg: Config) -> int:
    if cfg.artifacts.mode == "proxied":
        return max(cfg.load_balancer.idle_timeout, UPLOAD_TIMEOUT_SECONDS)
    return cfg.load_balancer.idle_timeout


HEALTH_CHECK = {
    "HealthCheckProtocol": "HTTP",
    "HealthCheckPort": "traffic-port",
    "HealthCheckPath": "/health",
    "HealthCheckIntervalSeconds": 15,
    "HealthCheckTimeoutSeconds": 5,
    "HealthyThresholdCount": 2,
    "UnhealthyThresholdCount": 3,
    "Matcher": {"HttpCode": "200"},
}


def listeners(cfg: Config, target_group_arn: str) -> dict[int, dict[str, Any]]:
    """port -> create_listener arguments (without LoadBalancerArn)."""
    forward = [{"Type": "forward", "TargetGroupArn": target_group_arn}]
    cert = cfg.load_balancer.certificate_arn
    if not cert:
        return {80: {"Protocol": "HTTP", "Port": 80, "DefaultActions": forward}}
    redirect = {
        "Type": "redirect",
        "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"},
    }
    return {
        80: {"Protocol": "HTTP", "Port": 80, "DefaultActions": [redirect]},
        443: {
            "Protocol": "HTTPS",
            "Port": 443,
            "Certificates": [{"CertificateArn": cert}],
            "SslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
            "DefaultActions": forward,
        },
    }


# --- ECS service -----------------------------------------------------------------------------


def service_network(subnets: list[str], tasks_sg: str, public_ip: bool) -> dict[str, Any]:
    return {
        "awsvpcConfiguration": {
            "subnets": sorted(subnets),
            "securityGroups": [tasks_sg],
            "assignPublicIp": "ENABLED" if public_ip else "DISABLED",
        }
    }


DEPLOYMENT_CONFIGURATION = {
    "deploymentCircuitBreaker": {"enable": True, "rollback": True},
    "maximumPercent": 200,
    "minimumHealthyPercent": 100,
}


def service_load_balancers(cfg: Config, target_group_arn: str) -> list[dict[str, Any]]:
    return [
        {
            "targetGroupArn": target_group_arn,
            "containerName": PROXY,
            "containerPort": cfg.oauth2_proxy.port,
        }
    ]


def to_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))
