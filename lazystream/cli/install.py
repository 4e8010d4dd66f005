"""Setting up and tearing down: ``crds apply``, ``uninstall`` and ``completion``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lazystream.cli.common import config_option, kubeconfig_option, load, main, print_table


@main.group()
def crds() -> None:
    """Install the CustomResourceDefinitions lazystream needs (its ServiceFence; Istio's come with Istio)."""


@crds.command("apply")
@kubeconfig_option
@click.option(
    "--from",
    "--dir",
    "sources",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="A CRD manifest file, or a directory of them (repeatable; default: the deploy/crds directory of "
    "this installation, lazystream's ServiceFence).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Also replace CRDs that lazystream does not own (e.g. Istio's, or Slime's ServiceFence). Without "
    "it they are left as they are and listed as such.",
)
@click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for Established."
)
def crds_apply(kubeconfig: Path | None, sources: tuple[Path, ...], overwrite: bool, timeout: float) -> None:
    """Create the CRDs that are missing, update lazystream's own, and wait until each is Established.

    A CRD already installed by someone else (Istio's installer, Slime's chart) is never changed unless
    --overwrite is given: another schema would change what the API server accepts for every user of it.

    \b
    Examples:
      lazystream crds apply
      lazystream crds apply --from istio-crds.yaml --from deploy/crds
    """
    from lazystream.kube import crds as crd_io
    from lazystream.kube.client import api_client

    try:
        manifests = crd_io.load_crds(*(sources or (crd_io.default_crd_dir(),)))
        with api_client(kubeconfig) as api:
            statuses = crd_io.apply_crds(api, manifests, overwrite=overwrite, timeout=timeout)
    except crd_io.CRDError as exc:
        raise click.ClickException(str(exc)) from exc
    print_table(
        ["CRD", "KIND", "VERSIONS", "ACTION", "ESTABLISHED"],
        [
            (
                s.name,
                s.kind,
                ",".join(s.versions),
                _crd_action(s),
                "yes" if s.established else "no",
            )
            for s in statuses
        ],
    )


@main.command()
@kubeconfig_option
@config_option
@click.option(
    "--namespace",
    "-n",
    "namespaces",
    multiple=True,
    help="Only this namespace (repeatable). Default: every namespace.",
)
@click.option("--yes", is_flag=True, help="Do it without asking.")
def uninstall(
    kubeconfig: Path | None, config_file: Path | None, namespaces: tuple[str, ...], yes: bool
) -> None:
    """Switch lazy loading off: remove every object lazystream wrote, in a safe order.

    Stop the workers first (e.g. scale the StatefulSet to 0), or they write the objects again. The
    objects are found from the API server, by lazystream's field manager (sink.fieldManager) in their
    managedFields, so nothing depends on a worker's memory. Order: Sidecars first, so
    workloads get the full mesh config back; then the ServiceFences lazystream created (created-by label);
    then the fallback EnvoyFilters; last the global-sidecar Services and ConfigMaps only lazystream wrote.
    Manual ServiceFences stay; lazystream's status fields are removed from them.
    """
    from lazystream.kube.cleanup import remove_everything
    from lazystream.kube.client import api_client

    config = load(config_file)
    where = ", ".join(namespaces) if namespaces else "every namespace"
    if not yes:
        click.confirm(f"Remove every object lazystream wrote in {where}?", abort=True, err=True)
    rows: list[tuple[str, str]] = []

    def step(what: str, key: object) -> None:
        rows.append((what, str(key)))
        click.echo(f"{what}: {key}", err=True)

    with api_client(kubeconfig or config.kube.kubeconfig) as api:
        done = remove_everything(
            api,
            field_manager=config.sink.field_manager,
            namespaces=namespaces or None,
            on_step=step,
        )
    print_table(["REMOVED", "OBJECT"], rows or [("nothing", "-")])
    click.echo(
        f"{len(done.sidecars)} Sidecars, {len(done.fences)} ServiceFences, {len(done.envoy_filters)} "
        f"EnvoyFilters, {len(done.global_sidecar)} global-sidecar Services/ConfigMaps removed; "
        f"status given back on {len(done.statuses)} manual ServiceFences"
    )


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL (commands, options, choices).

    \b
    Examples:
      eval "$(lazystream completion bash)"             # in ~/.bashrc
      lazystream completion fish > ~/.config/fish/completions/lazystream.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:  # click knows the three shells offered
        raise click.UsageError(f"no completion for {shell}")
    click.echo(cls(main, {}, "lazystream", "_LAZYSTREAM_COMPLETE").source())


def _crd_action(status: Any) -> str:
    """What ``crds apply`` did to one CRD, naming the owner of one it left alone or overwrote."""
    if status.action == "left alone":
        return f"left alone (owned by {status.owner}; --overwrite replaces it)"
    if status.action == "updated" and status.owner not in ("", "lazystream"):
        return f"overwritten (was owned by {status.owner})"
    return str(status.action)
