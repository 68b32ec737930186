"""The oauth2-proxy sidecar's arguments and environment, checked against its real flag list.

oauth2-proxy cannot run here (its image is distroless and no binary can be fetched), so these
tests are pure: they pin what we pass and check every flag name against the flags that the
pinned image version defines.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from conftest import make_config

from mlflow_ecs import config, render
from mlflow_ecs.config import Config
from mlflow_ecs.steps.secrets import generate_cookie_secret

ACCOUNT = "123456789012"
REGION = "eu-west-1"
DOMAIN = "mlflow.example.com"
CERT = f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
ALB_DNS = "mlflow-alb-1234567890.eu-west-1.elb.amazonaws.com"
GCLOUD = "https://accounts.google.com=32555940559.apps.googleusercontent.com"

PINNED_PROXY_VERSION = "v7.12.0"

# Every flag oauth2-proxy v7.12.x accepts (provider-specific sub-pages aside), copied from its
# repository oauth2-proxy/oauth2-proxy, docs/versioned_docs/version-7.12.x/configuration/
# overview.md (the "Config Options" tables of the 7.12.x docs), and checked against the flag
# sets in pkg/apis/options/legacy_options.go (legacyUpstreamsFlagSet, legacyServerFlagset,
# legacyProviderFlagSet: upstream, upstream-timeout, http-address, provider, client-id,
# client-secret) and options.go (NewFlagSet). Update it with DEFAULT_PROXY_IMAGE.
OAUTH2_PROXY_FLAGS_V7_12 = frozenset(
    {
        # command line
        "config", "version",
        # general provider options
        "acr-values", "allowed-group", "approval-prompt", "backend-logout-url", "client-id",
        "client-secret-file", "client-secret", "code-challenge-method",
        "insecure-oidc-allow-unverified-email", "insecure-oidc-skip-issuer-verification",
        "insecure-oidc-skip-nonce", "jwt-key-file", "jwt-key", "login-url",
        "auth-request-response-mode", "oidc-audience-claim", "oidc-email-claim",
        "oidc-extra-audience", "oidc-groups-claim", "oidc-issuer-url", "oidc-jwks-url",
        "oidc-public-key-file", "profile-url", "prompt", "provider-ca-file",
        "provider-display-name", "provider", "pubjwk-url", "redeem-url", "scope",
        "skip-claims-from-profile-url", "skip-oidc-discovery", "use-system-trust-store",
        "validate-url",
        # cookie options
        "cookie-csrf-expire", "cookie-csrf-per-request", "cookie-csrf-per-request-limit",
        "cookie-domain", "cookie-expire", "cookie-httponly", "cookie-name", "cookie-path",
        "cookie-refresh", "cookie-samesite", "cookie-secret", "cookie-secret-file",
        "cookie-secure",
        # header options
        "basic-auth-password", "set-xauthrequest", "set-authorization-header", "set-basic-auth",
        "skip-auth-strip-headers", "pass-access-token", "pass-authorization-header",
        "pass-basic-auth", "prefer-email-to-user", "pass-user-headers",
        # logging options
        "auth-logging-format", "auth-logging", "errors-to-info-log", "exclude-logging-path",
        "logging-compress", "logging-filename", "logging-local-time", "logging-max-age",
        "logging-max-backups", "logging-max-size", "request-id-header",
        "request-logging-format", "request-logging", "silence-ping-logging",
        "standard-logging-format", "standard-logging",
        # page template options
        "banner", "custom-sign-in-logo", "custom-templates-dir", "display-htpasswd-form",
        "footer", "show-debug-on-error",
        # probe options
        "ping-path", "ping-user-agent", "ready-path", "gcp-healthchecks",
        # proxy options
        "allow-query-semicolons", "api-route", "authenticated-emails-file",
        "bearer-token-login-fallback", "email-domain", "encode-state", "extra-jwt-issuers",
        "force-https", "force-json-errors", "htpasswd-file", "htpasswd-user-group",
        "proxy-prefix", "real-client-ip-header", "redirect-url", "relative-redirect-url",
        "reverse-proxy", "signature-key", "skip-auth-preflight", "skip-auth-regex",
        "skip-auth-route", "skip-jwt-bearer-tokens", "skip-provider-button",
        "ssl-insecure-skip-verify", "trusted-ip", "whitelist-domain",
        # server options
        "http-address", "https-address", "metrics-address", "metrics-secure-address",
        "metrics-tls-cert-file", "metrics-tls-key-file", "tls-cert-file", "tls-key-file",
        "tls-cipher-suite", "tls-min-version",
        # session options
        "session-cookie-minimal", "session-store-type", "redis-cluster-connection-urls",
        "redis-connection-url", "redis-ca-path", "redis-insecure-skip-tls-verify",
        "redis-password", "redis-sentinel-password", "redis-sentinel-master-name",
        "redis-sentinel-connection-urls", "redis-use-cluster", "redis-use-sentinel",
        "redis-connection-idle-timeout",
        # upstream options
        "flush-interval", "pass-host-header", "proxy-websockets",
        "ssl-upstream-insecure-skip-verify", "disable-keep-alives", "upstream-timeout",
        "upstream",
    }
)  # fmt: skip

BOOL_FLAGS = {
    "reverse-proxy", "skip-provider-button", "cookie-secure", "skip-jwt-bearer-tokens",
}  # fmt: skip

# Configurations that reach every branch of proxy_args.
CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "https-domain": {"load_balancer": {"domain": DOMAIN, "certificate_arn": CERT}},
    "proxied-issuers-domains": {
        "artifacts": {"mode": "proxied"},
        "oauth2_proxy": {
            "email_domains": ["example.com", "example.org"],
            "extra_jwt_issuers": [GCLOUD],
            "provider": "oidc",
        },
        "load_balancer": {"domain": DOMAIN, "certificate_arn": CERT},
    },
}


def cfg_of(name: str) -> Config:
    return make_config(CONFIGS[name])


def refs_for(cfg: Config) -> render.TaskRefs:
    names = cfg.names(ACCOUNT, REGION)
    secret_names = [
        names.secret_db_password,
        names.secret_client_id,
        names.secret_client_secret,
        names.secret_cookie,
    ]
    return render.TaskRefs(
        region=REGION,
        execution_role_arn=f"arn:aws:iam::{ACCOUNT}:role/x-execution",
        task_role_arn=f"arn:aws:iam::{ACCOUNT}:role/x-task",
        db_host="db.example",
        alb_dns=ALB_DNS,
        secret_arns={
            n: f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{n}-AbC123" for n in secret_names
        },
    )


def flag_name(arg: str) -> str:
    assert arg.startswith("--") and "=" in arg, f"{arg!r}: pass every flag as --name=value"
    return arg[2:].split("=", 1)[0]


def env_flag_name(env: str) -> str:
    """OAUTH2_PROXY_COOKIE_SECRET -> cookie-secret (oauth2-proxy's env-to-flag rule)."""
    assert env.startswith("OAUTH2_PROXY_"), env
    return env.removeprefix("OAUTH2_PROXY_").lower().replace("_", "-")


def test_the_pinned_image_is_the_version_the_flag_list_came_from() -> None:
    image = f"quay.io/oauth2-proxy/oauth2-proxy:{PINNED_PROXY_VERSION}"
    assert image == config.DEFAULT_PROXY_IMAGE
    assert make_config().oauth2_proxy.image == config.DEFAULT_PROXY_IMAGE


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_flag_we_pass_exists_in_oauth2_proxy(name: str) -> None:
    cfg = cfg_of(name)
    args = render.proxy_args(cfg, cfg.names(ACCOUNT, REGION))
    unknown = sorted({flag_name(a) for a in args} - OAUTH2_PROXY_FLAGS_V7_12)
    assert not unknown, f"not flags of oauth2-proxy {PINNED_PROXY_VERSION}: {unknown}"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_environment_variable_names_a_flag(name: str) -> None:
    cfg = cfg_of(name)
    container = render.proxy_container(cfg, cfg.names(ACCOUNT, REGION), refs_for(cfg))
    env_names = [e["name"] for e in container.get("environment", [])]
    env_names += [s["name"] for s in container.get("secrets", [])]
    unknown = sorted(n for n in env_names if env_flag_name(n) not in OAUTH2_PROXY_FLAGS_V7_12)
    assert not unknown, f"not settings of oauth2-proxy {PINNED_PROXY_VERSION}: {unknown}"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_boolean_flags_carry_an_explicit_value(name: str) -> None:
    """pflag reads `--flag value` of a bool as the flag plus a stray argument: use `=`."""
    cfg = cfg_of(name)
    for arg in render.proxy_args(cfg, cfg.names(ACCOUNT, REGION)):
        if flag_name(arg) in BOOL_FLAGS:
            assert re.fullmatch(r"--[a-z-]+=(true|false)", arg), arg


def test_default_arguments() -> None:
    cfg = cfg_of("defaults")
    assert render.proxy_args(cfg, cfg.names(ACCOUNT, REGION)) == [
        "--http-address=0.0.0.0:4180",
        "--upstream=http://127.0.0.1:5000/",
        "--reverse-proxy=true",
        "--provider=google",
        "--email-domain=*",
        "--skip-auth-route=GET=^/health$",
        "--skip-provider-button=true",
        "--cookie-secure=false",
        "--skip-jwt-bearer-tokens=true",
    ]


def test_https_domain_arguments() -> None:
    cfg = cfg_of("https-domain")
    assert render.proxy_args(cfg, cfg.names(ACCOUNT, REGION)) == [
        "--http-address=0.0.0.0:4180",
        "--upstream=http://127.0.0.1:5000/",
        "--reverse-proxy=true",
        "--provider=google",
        "--email-domain=*",
        "--skip-auth-route=GET=^/health$",
        "--skip-provider-button=true",
        "--cookie-secure=true",
        "--skip-jwt-bearer-tokens=true",
        f"--redirect-url=https://{DOMAIN}/oauth2/callback",
    ]


def test_proxied_arguments_with_issuers_and_domains() -> None:
    cfg = cfg_of("proxied-issuers-domains")
    assert render.proxy_args(cfg, cfg.names(ACCOUNT, REGION)) == [
        "--http-address=0.0.0.0:4180",
        "--upstream=http://127.0.0.1:5000/",
        "--reverse-proxy=true",
        "--provider=oidc",
        "--email-domain=example.com",
        "--email-domain=example.org",
        "--skip-auth-route=GET=^/health$",
        "--skip-provider-button=true",
        "--cookie-secure=true",
        "--skip-jwt-bearer-tokens=true",
        f"--extra-jwt-issuers={GCLOUD}",
        f"--redirect-url=https://{DOMAIN}/oauth2/callback",
        f"--upstream-timeout={render.UPLOAD_TIMEOUT_SECONDS}s",
    ]


def test_health_route_skips_auth_for_get_of_exactly_health() -> None:
    """method=path_regex: only GET /health reaches MLflow unauthenticated (the ALB check)."""
    cfg = cfg_of("defaults")
    args = render.proxy_args(cfg, cfg.names(ACCOUNT, REGION))
    (route,) = [a for a in args if a.startswith("--skip-auth-route=")]
    method, regex = route.split("=", 1)[1].split("=", 1)
    assert method == "GET"
    assert re.search(regex, "/health")
    for other in ("/health/x", "/api/2.0/mlflow/experiments/search", "/", "/xhealth"):
        assert not re.search(regex, other), other
    assert render.HEALTH_CHECK["HealthCheckPath"] == "/health"


def test_proxy_container_environment_and_secrets() -> None:
    cfg = cfg_of("https-domain")
    names = cfg.names(ACCOUNT, REGION)
    refs = refs_for(cfg)
    container = render.proxy_container(cfg, names, refs)
    assert container["image"] == config.DEFAULT_PROXY_IMAGE
    assert container["command"] == render.proxy_args(cfg, names)
    assert "entryPoint" not in container  # distroless: the image's own entrypoint is the binary
    assert container.get("environment", []) == []
    assert container["secrets"] == [
        {"name": "OAUTH2_PROXY_CLIENT_ID", "valueFrom": refs.secret_arns[names.secret_client_id]},
        {
            "name": "OAUTH2_PROXY_CLIENT_SECRET",
            "valueFrom": refs.secret_arns[names.secret_client_secret],
        },
        {"name": "OAUTH2_PROXY_COOKIE_SECRET", "valueFrom": refs.secret_arns[names.secret_cookie]},
    ]
    ports = [{"containerPort": 4180, "hostPort": 4180, "protocol": "tcp"}]
    assert container["portMappings"] == ports
    assert container["dependsOn"] == [{"containerName": render.MLFLOW, "condition": "HEALTHY"}]


def test_generated_cookie_secret_decodes_to_32_bytes() -> None:
    """oauth2-proxy takes a cookie secret that URL-safe base64-decodes to 16, 24 or 32 bytes."""
    seen = set()
    for _ in range(20):
        secret = generate_cookie_secret()
        assert re.fullmatch(r"[A-Za-z0-9_-]+=*", secret), secret
        assert len(base64.urlsafe_b64decode(secret)) == 32
        seen.add(secret)
    assert len(seen) == 20  # random each time
