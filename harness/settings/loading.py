"""Reading the settings files, choosing the provider, resolving everything."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.settings.model import (
    Nfs,
    Nginx,
    Settings,
)
from harness.settings.rules import (
    RULES,
    Context,
    bundle_dir,
)
from harness.settings.schema import (
    LOCAL_FILE,
    NETWORKS_CONF,
    PROVIDERS,
    ROOT,
    SETTINGS_FILE,
    SettingsError,
    apply_environment,
    merge,
    problem,
    read_fields,
)

# --- putting it together ---


def choose_provider(
    requested: str | None,
    environ: Mapping[str, str],
    active: Sequence[str],
    configured: Any,
) -> tuple[str, str]:
    """Return the provider and where it came from, in Vagrant's precedence.

    ``vagrant up --provider`` wins, then VAGRANT_DEFAULT_PROVIDER, then the
    provider of machines that already exist, then the ``provider`` setting.
    """
    if requested:
        return requested, "--provider"
    if environ.get("VAGRANT_DEFAULT_PROVIDER"):
        return environ["VAGRANT_DEFAULT_PROVIDER"], "VAGRANT_DEFAULT_PROVIDER"
    if active:
        return active[0], "the existing machines (.vagrant)"
    return str(configured), "provider"


def yaml_error(
    path: str, line: int, column: int, what: str, context: str | None
) -> str:
    """Return the message of a YAML syntax error (Ruby and PyYAML share libyaml)."""
    where = f"{what}, {context}" if context else what
    return (
        f"{path}: line {line} column {column}: not valid YAML ({where}); fix it there"
    )


def resolve(
    documents: Sequence[Mapping[str, Any]],
    environ: Mapping[str, str],
    *,
    root: Path = ROOT,
    provider: str | None = None,
    active_providers: Sequence[str] = (),
    networks_conf: str | None = None,
) -> Settings:
    """Return the settings of merged ``documents``; raise SettingsError if invalid.

    Each document is ``{"path": ..., "data": ...}`` or, for a file that failed to
    parse, ``{"path": ..., "error": {"line", "column", "problem", "context"}}``.
    """
    data: dict[str, Any] = {}
    problems = []
    for doc in documents:
        if "error" in doc:
            err = doc["error"]
            problems.append(
                yaml_error(
                    doc["path"],
                    err["line"],
                    err["column"],
                    err["problem"],
                    err.get("context"),
                )
            )
            continue
        content = doc.get("data")
        if content is None:
            continue  # an empty file changes nothing
        if not isinstance(content, Mapping):
            what = "the file must be a mapping of settings"
            problems.append(
                problem(doc["path"], content, what, f"start from {SETTINGS_FILE}")
            )
            continue
        data = merge(data, content)
    if problems:
        raise SettingsError(problems)
    data = apply_environment(data, environ)
    values, problems = read_fields(data)
    if problems:
        raise SettingsError(problems)
    chosen, source = choose_provider(
        provider, environ, active_providers, values["provider"]
    )
    ctx = Context(chosen, source, root, networks_conf)
    for rule in RULES:
        problems += rule(values, ctx)
    if problems:
        raise SettingsError(problems)
    return build(values, data, ctx)


def build(values: dict[str, Any], data: dict[str, Any], ctx: Context) -> Settings:
    """Return the Settings object of validated ``values``."""
    nfs_server = next(n for n in ctx.nodes if n.name == values["nfs.server"])
    providers = {
        name: {
            key.rsplit(".", 1)[1]: value
            for key, value in values.items()
            if key.startswith(f"providers.{name}.")
        }
        for name in PROVIDERS
    }
    return Settings(
        provider=ctx.provider,
        provider_source=ctx.provider_source,
        box={"name": values["box.name"], "version": values["box.version"]},
        nodes=ctx.nodes,
        kubernetes_version=values["kubernetes.version"],
        kubernetes_package_revision=values["kubernetes.package_revision"],
        containerd_version=values["containerd.version"],
        flannel_version=values["flannel.version"],
        flannel_cni_plugin_version=values["flannel.cni_plugin_version"],
        pod_cidr=values["network.pod_cidr"],
        service_cidr=values["network.service_cidr"],
        node_subnet=values["network.node_subnet"],
        nfs=Nfs(
            server=nfs_server.name,
            server_address=nfs_server.address,
            export_path=values["nfs.export_path"],
            mount_point=values["nfs.mount_point"],
        ),
        nginx=Nginx(
            image=values["nginx.image"],
            replicas=values["nginx.replicas"],
            node_port=values["nginx.node_port"],
        ),
        bundle_path=bundle_dir(values, ctx.root),
        providers=providers,
        root=ctx.root,
        raw=data,
    )


# --- the two entry points: the harness and the Vagrantfile ---


def settings_paths(root: Path, environ: Mapping[str, str]) -> tuple[Path, Path]:
    """Return the base file (cluster.yaml or $MINICLUSTER_CONFIG) and its local file."""
    base = Path(environ.get("MINICLUSTER_CONFIG") or SETTINGS_FILE)
    if not base.is_absolute():
        base = root / base
    return base, base.parent / LOCAL_FILE


def display_path(path: Path, root: Path) -> str:
    """Return ``path`` relative to ``root`` when inside it, as messages show it."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def read_yaml(path: Path, root: Path) -> dict[str, Any]:
    """Return the document of the YAML file ``path`` in the form resolve() takes."""
    import yaml  # not at import time: the Vagrantfile's python3 may lack PyYAML

    shown = display_path(path, root)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml, as Ruby uses
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except yaml.MarkedYAMLError as exc:
        # Ruby's Psych reports the context mark when there is one, else the problem's.
        mark = exc.context_mark or exc.problem_mark
        error = {
            "line": mark.line + 1 if mark else 0,
            "column": mark.column + 1 if mark else 0,
            "problem": exc.problem,
            "context": exc.context,
        }
        return {"path": shown, "error": error}
    return {"path": shown, "data": _plain(data)}


def _plain(value: Any) -> Any:
    """Return ``value`` with YAML dates as text, as Ruby's JSON writes them."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def dotfile_dir(root: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """Return where Vagrant keeps the machines of ``root`` (VAGRANT_DOTFILE_PATH)."""
    dotfile = Path(environ.get("VAGRANT_DOTFILE_PATH") or root / ".vagrant")
    return dotfile if dotfile.is_absolute() else root / dotfile


def active_providers(root: Path, environ: Mapping[str, str]) -> list[str]:
    """Return the providers of machines Vagrant has created under ``root``."""
    found = {p.parent.name for p in dotfile_dir(root, environ).glob("machines/*/*/id")}
    return sorted(found)


def load(
    root: Path = ROOT,
    environ: Mapping[str, str] = os.environ,
    *,
    provider: str | None = None,
    networks_conf: Path = NETWORKS_CONF,
) -> Settings:
    """Return the validated settings of ``root``; raise SettingsError if invalid."""
    base, local = settings_paths(root, environ)
    if not base.is_file():
        shown = display_path(base, root)
        fix = "set MINICLUSTER_CONFIG to an existing file, or restore cluster.yaml"
        raise SettingsError([problem("MINICLUSTER_CONFIG", shown, "no such file", fix)])
    documents = [read_yaml(base, root)]
    if local.is_file():
        documents.append(read_yaml(local, root))
    conf = (
        networks_conf.read_text(encoding="utf-8") if networks_conf.is_file() else None
    )
    return resolve(
        documents,
        environ,
        root=root,
        provider=provider,
        active_providers=active_providers(root, environ),
        networks_conf=conf,
    )
