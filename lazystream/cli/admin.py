"""The commands that ask a running worker's admin API: ``explain`` and ``reset``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from lazystream.cli.common import F, config_option, load, main, print_table
from lazystream.config import Config

WORKER_SELECTOR = "app=lazystream"
"""The labels of the worker pods (deploy/'s StatefulSet)."""


def _ask_workers(
    path: str,
    *,
    admin_url: str | None,
    config: Config,
    method: str = "GET",
    token: str | None = None,
    owner: bool = False,
) -> tuple[int, dict[str, Any], str]:
    """Ask a worker's admin API: at ``--admin-url`` when given, else through the API server's proxy to the
    worker pods (labels :data:`WORKER_SELECTOR` in the Lease's namespace), else at the configured
    ``web.host:web.port``. With ``owner``, the answer of the worker that holds the fence's learned state
    (``learnedSource: table``) is preferred. Returns the status, the JSON body and whom it came from."""
    if admin_url:
        base = _admin_url(admin_url, config)
        return (*_admin_request(f"{base}/{path}", method, token), base)
    from kubernetes.config import ConfigException

    from lazystream.admin import TOKEN_HEADER
    from lazystream.kube.client import api_client
    from lazystream.kube.workers import NoWorkers, find_workers, proxy

    headers = {TOKEN_HEADER: token} if token else {}

    try:
        with api_client(config.kube.kubeconfig) as api:
            pods = find_workers(api, config.lease_namespace, WORKER_SELECTOR, config.web.port)
            answers: list[tuple[int, dict[str, Any], str]] = []
            for pod in pods:
                status, body = proxy(api, pod, path, method=method, headers=headers)
                answers.append((status, body, f"pod {pod.namespace}/{pod.name}"))
                holds = not owner or status != 200 or body.get("learnedSource") == "table"
                if status < 500 and holds:  # an answer that asking another worker would not improve
                    return answers[-1]
            answered = [a for a in answers if a[0] < 500]
            return (answered or answers)[0]
    except (ConfigException, NoWorkers, OSError):
        base = _admin_url(None, config)  # no cluster or no worker pods: a worker on this machine
        return (*_admin_request(f"{base}/{path}", method, token), base)


def _admin_url(admin_url: str | None, config: Config) -> str:
    if admin_url:
        return admin_url.rstrip("/")
    web = config.web
    host = "127.0.0.1" if web.host in ("0.0.0.0", "::", "") else web.host  # noqa: S104 - a comparison
    return f"http://{host}:{web.port}"


def _fence_ref(value: str) -> tuple[str, str]:
    namespace, sep, name = value.partition("/")
    if not (sep and namespace and name) or "/" in name:
        raise click.BadParameter(f"{value!r} is not NAMESPACE/NAME", param_hint="FENCE")
    return namespace, name


def _admin_token(token: str | None, config: Config) -> str | None:
    """``--token``, else the token of the kubeconfig's current user (or the pod's ServiceAccount)."""
    if token:
        return token
    from lazystream.kube.client import bearer_token

    return bearer_token(config.kube.kubeconfig)


def _admin_request(url: str, method: str = "GET", token: str | None = None) -> tuple[int, dict[str, Any]]:
    """One request to the admin API; its status and JSON body (HTTP errors carry JSON too)."""
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise click.UsageError(f"--admin-url must be an http(s) URL, got {url!r}")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310 - checked above
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - checked above
            return int(response.status), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {"error": exc.reason}
        return int(exc.code), body
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        reason = getattr(reason, "strerror", None) or str(reason)
        raise click.ClickException(
            f"cannot reach the admin API at {url}: {reason} (is a worker running there? give --admin-url or "
            "LAZYSTREAM_ADMIN_URL, or a kubeconfig to find the worker pods)"
        ) from exc


def admin_url_option(func: F) -> F:
    return click.option(
        "--admin-url",
        envvar="LAZYSTREAM_ADMIN_URL",
        help="Base URL of a worker's admin API [env: LAZYSTREAM_ADMIN_URL; default: the worker pods "
        f"({WORKER_SELECTOR} in the Lease's namespace) through the API server's proxy, else web.host and "
        "web.port of the configuration].",
    )(func)


def token_option(func: F) -> F:
    return click.option(
        "--token",
        envvar="LAZYSTREAM_ADMIN_TOKEN",
        help="Bearer token for the admin API's writes; the worker asks the API server whether its user may "
        "update ServiceFences there [env: LAZYSTREAM_ADMIN_TOKEN; default: the kubeconfig's token, or the "
        "pod's ServiceAccount token].",
    )(func)


def _why_text(why: Sequence[Mapping[str, str]], wide: bool) -> str:
    """The reasons of a host; with ``wide`` their details too (a table of them runs to 200 columns)."""
    if not wide:
        return ", ".join(dict.fromkeys(str(w.get("reason")) for w in why))
    return "; ".join(
        f"{w.get('reason')} ({w.get('detail')})" if w.get("detail") else str(w.get("reason")) for w in why
    )


def _seen(value: str | None) -> str:
    """An ISO 8601 UTC time as ``2026-12-07 10:00:00 UTC`` (to the second: a table is read, not parsed)."""
    return f"{value.replace('T', ' ').removesuffix('Z')[:19]} UTC" if value else "-"


@main.command()
@click.argument("fence", metavar="NAMESPACE/NAME")
@admin_url_option
@config_option
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "yaml"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option("--wide", is_flag=True, help="The table with each reason's detail (which rule, which object).")
def explain(fence: str, admin_url: str | None, config_file: Path | None, output: str, wide: bool) -> None:
    """Explain a fence: each host of its Sidecar and why it is there, asked of a running worker.

    Reasons: static (spec.host), namespace (spec.host ns/*), namespaceSelector, labelSelector, learned (from
    access logs or metrics, with first and last observation and count when the worker holds the fence's
    learned state), alias (general.domainAliases), virtualService (a route destination of a host of the
    fence), stableHost, mesh (in every Sidecar) and expiring (no longer generated, EXPIREWAIT). Recently
    rejected hosts (not admitted, invalid) follow, with their reason.
    """
    namespace, name = _fence_ref(fence)
    status, body, via = _ask_workers(
        f"fences/{namespace}/{name}/explain", admin_url=admin_url, config=load(config_file), owner=True
    )
    if status != 200:
        raise click.ClickException(f"{body.get('error') or f'HTTP {status}'} (asked {via})")
    if output == "json":
        click.echo(json.dumps(body, indent=2))
        return
    if output == "yaml":
        click.echo(yaml.safe_dump(body, sort_keys=False, allow_unicode=True), nl=False)
        return
    state = "enabled" if body.get("enabled") else "disabled"
    made = "auto-created" if body.get("autoCreated") else "manual"
    sources = {"table": "learned state with times", "status": "learned hosts from status.metricStatus"}
    source = sources.get(str(body.get("learnedSource")), "")
    click.echo(f"ServiceFence {body.get('fence')} ({state}, {made}; {source}; from {via})")
    if body.get("noSidecar"):
        click.echo(f"No Sidecar: {body['noSidecar']}")
    print_table(
        ["HOST", "STATUS", "SIDECAR", "WHY", "FIRST SEEN", "LAST SEEN", "COUNT"],
        [
            (
                h["host"],
                h["status"],
                "yes" if h.get("inSidecar") else "no",
                _why_text(h.get("why") or [], wide),
                _seen(h.get("firstSeen")),
                _seen(h.get("lastSeen")),
                h.get("count", "-"),
            )
            for h in body.get("hosts") or []
        ],
    )
    rejected = body.get("rejected") or []
    click.echo("")
    if rejected:
        click.echo("Recently rejected hosts:")
        print_table(["HOST", "REASON"], [(r["host"], r["reason"]) for r in rejected])
    else:
        click.echo("No recently rejected hosts.")
    left_out = body.get("leftOut") or []
    if left_out:
        click.echo("")
        click.echo("Left out of the Sidecar (Istio's validation would refuse the whole Sidecar):")
        print_table(["HOST", "REASON"], [(r["host"], r["reason"]) for r in left_out])


@main.command()
@click.argument("target", metavar="NAMESPACE[/NAME]")
@admin_url_option
@token_option
@config_option
def reset(target: str, admin_url: str | None, token: str | None, config_file: Path | None) -> None:
    """Forget what a fence (NAMESPACE/NAME) or every fence of a namespace (NAMESPACE) has learned.

    Slime's svfReset: a reset message goes onto the edges topic for each fence, through a running worker's
    admin API; the Sidecars shrink to their static hosts once the worker has applied it.
    """
    if "/" in target:
        namespace, name = _fence_ref(target)
        path = f"fences/{namespace}/{name}/reset"
    else:
        path = f"namespaces/{target}/reset"
    config = load(config_file)  # once: its warnings are printed once
    status, body, via = _ask_workers(
        path, admin_url=admin_url, config=config, method="POST", token=_admin_token(token, config)
    )
    if status != 202:
        raise click.ClickException(f"{body.get('error') or f'HTTP {status}'} (asked {via})")
    fences = body.get("reset") or []
    click.echo(f"reset {len(fences)} fence(s): {', '.join(fences) or 'none'}")
