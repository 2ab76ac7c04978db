"""What ``cluster.yaml`` may hold: constants, every field and its type, merging.

Also the error every rule reports through, :class:`SettingsError`.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_FILE = "cluster.yaml"
LOCAL_FILE = "cluster.local.yaml"  # merged over the base file, found beside it
NETWORKS_CONF = Path("/etc/vbox/networks.conf")

PROVIDERS = ("virtualbox", "libvirt", "docker")
CONTROL_PLANE = "control-plane"
WORKER = "worker"
SUPPORTED_MINORS = ("1.36", "1.37")

# kubeadm's preflight refuses fewer CPUs or less memory on a control plane.
KUBEADM_MIN_CPUS = 2
KUBEADM_MIN_MEMORY_MB = 1700
WORKER_MIN_MEMORY_MB = 1024
MAX_WORKERS = 20
MAX_CPUS = 64
MAX_MEMORY_MB = 262144
NODE_PORT_RANGE = (30000, 32767)  # kube-apiserver's default --service-node-port-range

# VirtualBox 6.1.28+ allows host-only networks only in these ranges unless
# /etc/vbox/networks.conf lists others (then only those).
VIRTUALBOX_DEFAULT_RANGES = ("192.168.56.0/21",)
# Networks a provider already uses inside or around each node. libvirt's is
# the management network of the settings (providers.libvirt.*).
PROVIDER_NETWORKS = {
    "virtualbox": (("10.0.2.0/24", "the NAT network of every VirtualBox VM"),),
    "docker": (("172.17.0.0/16", "Docker's default bridge"),),
}

# Where things live inside a node.
GUEST_ROOT = "/vagrant"
GUEST_SHARED_DIR = f"{GUEST_ROOT}/.minicluster"
GUEST_BUNDLE_DIR = "/opt/minicluster/bundle"
DOCKER_ENTRY = "/usr/local/bin/minicluster-entry"

# Host environment variables that override one setting each (value type, field).
ENV_OVERRIDES: dict[str, tuple[str, type]] = {
    "MINICLUSTER_WORKERS": ("nodes.workers.count", int),
    "MINICLUSTER_BUNDLE_PATH": ("bundle.path", str),
    "MINICLUSTER_DOCKER_IMAGE": ("providers.docker.image", str),
    "MINICLUSTER_DOCKER_PRIVILEGED": ("providers.docker.privileged", bool),
    "MINICLUSTER_LIBVIRT_DRIVER": ("providers.libvirt.driver", str),
    "MINICLUSTER_LIBVIRT_SYNCED_FOLDER": ("providers.libvirt.synced_folder_type", str),
}
# Host environment the Vagrantfile forwards to ``--json`` (see resolve()).
HOST_ENV = (
    "MINICLUSTER_CONFIG",
    *ENV_OVERRIDES,
    "VAGRANT_DEFAULT_PROVIDER",
)

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
K8S_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
PACKAGE_REVISION = re.compile(r"^\d+\.\d+$")
# An upstream release (1.7.28) or a whole Debian version (1.7.28-0ubuntu1~24.04.1).
CONTAINERD_VERSION = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.+~]+)?$")
FLANNEL_VERSION = re.compile(r"^v\d+\.\d+\.\d+$")
FLANNEL_CNI_VERSION = re.compile(r"^v\d+\.\d+\.\d+-flannel\d+$")
BOX_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
BOX_VERSION = re.compile(r"^\d+(\.\d+){0,3}$")
IMAGE_REF = re.compile(
    r"^[a-z0-9][a-z0-9._/-]*(:[0-9]+)?[a-z0-9._/-]*:[\w][\w.-]{0,127}$"
)
GUEST_PATH = re.compile(r"^(/[A-Za-z0-9._-]+)+$")

LIBVIRT_DRIVERS = ("kvm", "qemu")
# The join and kubeconfig hand-off needs /vagrant shared both ways; rsync is one-way.
LIBVIRT_SYNCED_FOLDERS = ("nfs", "9p", "virtiofs")
# nat reaches out through the host; none isolates the guests (SSH from the host only).
LIBVIRT_MANAGEMENT_MODES = ("nat", "none")
LIBVIRT_NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

_MISSING = object()


class SettingsError(HarnessError, ValueError):
    """The settings are invalid; each line names the field, the value and the fix."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)

    def __str__(self) -> str:
        return "\n".join(self.problems)


# --- the schema: every field, its type, and whether it may be left out ---

# (dotted field, type, default or _MISSING). Every other key is unknown.
FIELDS: tuple[tuple[str, type, Any], ...] = (
    ("provider", str, _MISSING),
    ("box.name", str, _MISSING),
    ("box.version", str, _MISSING),
    ("nodes.control_plane.name", str, _MISSING),
    ("nodes.control_plane.cpus", int, _MISSING),
    ("nodes.control_plane.memory_mb", int, _MISSING),
    ("nodes.workers.count", int, _MISSING),
    ("nodes.workers.name_prefix", str, _MISSING),
    ("nodes.workers.cpus", int, _MISSING),
    ("nodes.workers.memory_mb", int, _MISSING),
    ("nodes.addresses", dict, {}),
    ("network.node_subnet", str, _MISSING),
    ("network.first_address", str, _MISSING),
    ("network.pod_cidr", str, _MISSING),
    ("network.service_cidr", str, _MISSING),
    ("kubernetes.version", str, _MISSING),
    ("kubernetes.package_revision", str, _MISSING),
    ("containerd.version", str, _MISSING),
    ("flannel.version", str, _MISSING),
    ("flannel.cni_plugin_version", str, _MISSING),
    ("nfs.server", str, _MISSING),
    ("nfs.export_path", str, _MISSING),
    ("nfs.mount_point", str, _MISSING),
    ("nginx.image", str, _MISSING),
    ("nginx.replicas", int, _MISSING),
    ("nginx.node_port", int, _MISSING),
    ("bundle.path", str, ""),
    ("providers.virtualbox.linked_clone", bool, True),
    ("providers.libvirt.driver", str, _MISSING),
    ("providers.libvirt.synced_folder_type", str, _MISSING),
    # vagrant-libvirt's own defaults: a NAT network the guests reach out through.
    ("providers.libvirt.management_network_name", str, "vagrant-libvirt"),
    ("providers.libvirt.management_network_address", str, "192.168.121.0/24"),
    ("providers.libvirt.management_network_mode", str, "nat"),
    # Empty keeps libvirt's host-model CPU; a model name (qemu64) picks that one.
    ("providers.libvirt.cpu_model", str, ""),
    ("providers.docker.image", str, _MISSING),
    ("providers.docker.privileged", bool, _MISSING),
)
FIELD_TYPES = {name: kind for name, kind, _ in FIELDS}
TYPE_WORDS = {str: "a string", int: "a whole number", bool: "true or false"}
TYPE_WORDS[dict] = "a mapping"


def show(value: Any) -> str:
    """Return ``value`` as the messages print it (JSON, so Ruby and Python agree)."""
    return json.dumps(value, sort_keys=True)


def problem(name: str, value: Any, what: str, fix: str) -> str:
    """Return one error line: ``field: value: problem; fix``."""
    return f"{name}: {show(value)}: {what}; {fix}"


# --- merging documents and environment overrides ---


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``over`` merged in, mappings key by key."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_env_value(name: str, text: str, kind: type) -> Any:
    """Return ``text`` from the environment variable ``name`` as a ``kind``."""
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise SettingsError(
                [problem(name, text, "not a whole number", "set a number such as 2")]
            ) from None
    if kind is bool:
        words = {"true": True, "1": True, "yes": True}
        words |= {"false": False, "0": False, "no": False}
        if text.lower() not in words:
            raise SettingsError(
                [problem(name, text, "not a boolean", "set true or false")]
            )
        return words[text.lower()]
    return text


def apply_environment(
    data: dict[str, Any], environ: Mapping[str, str]
) -> dict[str, Any]:
    """Return ``data`` with the ENV_OVERRIDES found in ``environ`` applied."""
    problems: list[str] = []
    for var, (name, kind) in ENV_OVERRIDES.items():
        if var not in environ:
            continue
        try:
            value = parse_env_value(var, environ[var], kind)
        except SettingsError as exc:
            problems += exc.problems
            continue
        override: dict[str, Any] = value
        for key in reversed(name.split(".")):
            override = {key: override}
        data = merge(data, override)
    if problems:
        raise SettingsError(problems)
    return data


# --- reading fields ---


def walk(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted name, value)`` for every leaf and known mapping of ``data``."""
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and FIELD_TYPES.get(name) is not dict:
            yield from walk(value, f"{name}.")
        else:
            yield name, value


def lookup(data: Mapping[str, Any], name: str) -> Any:
    """Return the value at dotted ``name`` or _MISSING."""
    value: Any = data
    for key in name.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return _MISSING
        value = value[key]
    return value


def has_type(value: Any, kind: type) -> bool:
    """Tell whether ``value`` is a ``kind`` (a bool is no number here)."""
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def read_fields(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Return the typed value of every field, and the problems found on the way."""
    problems = []
    known = set(FIELD_TYPES)
    sections = {name.rsplit(".", 1)[0] for name in known if "." in name}
    for name, value in walk(data):
        if name in known:
            continue
        if name in sections:
            what = "must be a mapping of settings"
            problems.append(problem(name, value, what, "indent its keys under it"))
            continue
        close = difflib.get_close_matches(name, known, n=1)
        fix = f"did you mean {close[0]}?" if close else "remove it"
        problems.append(problem(name, value, "unknown setting", fix))
    values = {}
    for name, kind, default in FIELDS:
        value = lookup(data, name)
        if value is _MISSING or value is None:
            if default is _MISSING:
                fix = f"add it ({TYPE_WORDS[kind]}) as in the repository's cluster.yaml"
                problems.append(problem(name, None, "missing", fix))
                continue
            value = default
        # YAML reads 1.36 or 202510 as numbers; a version is text either way.
        if kind is str and (has_type(value, int) or isinstance(value, float)):
            value = _number_text(value)
        if not has_type(value, kind):
            fix = f"write {TYPE_WORDS[kind]}"
            if kind is str:
                fix += " (quote it)"
            problems.append(problem(name, value, f"is not {TYPE_WORDS[kind]}", fix))
            continue
        values[name] = value
    return values, problems


def _number_text(value: float) -> str:
    return str(value)
