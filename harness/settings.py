"""Load, merge, validate and derive the cluster settings of ``cluster.yaml``.

This module is the only place where settings are checked and derived. The harness
calls :func:`load`; the Vagrantfile parses the YAML with Ruby and pipes the
documents to ``python3 -m harness.settings --json``, which prints the resolved
settings or the errors. Both paths go through :func:`resolve`, so the same bad
file gives the same message. Only the standard library is imported at module
level because the Vagrantfile runs this with the host's plain ``python3``.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parent.parent
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


@dataclass(frozen=True)
class Node:
    """One machine of the cluster."""

    name: str
    role: str  # CONTROL_PLANE or WORKER
    address: str
    cpus: int
    memory_mb: int

    @property
    def is_control_plane(self) -> bool:
        return self.role == CONTROL_PLANE


@dataclass(frozen=True)
class Nfs:
    """The NFS share: which node exports what, and where every node mounts it."""

    server: str
    server_address: str
    export_path: str
    mount_point: str


@dataclass(frozen=True)
class Nginx:
    """The demo Deployment and its NodePort."""

    image: str
    replicas: int
    node_port: int


@dataclass(frozen=True)
class Settings:
    """Validated settings with everything derived from them."""

    provider: str
    provider_source: str  # where the provider came from, for messages
    box: dict[str, str]
    nodes: list[Node]
    kubernetes_version: str
    kubernetes_package_revision: str
    containerd_version: str
    flannel_version: str
    flannel_cni_plugin_version: str
    pod_cidr: str
    service_cidr: str
    node_subnet: str
    nfs: Nfs
    nginx: Nginx
    bundle_path: Path | None  # the bundle's version directory on the host
    providers: dict[str, Any]
    root: Path
    raw: dict[str, Any] = field(repr=False)

    @property
    def control_plane(self) -> Node:
        return next(n for n in self.nodes if n.is_control_plane)

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes if not n.is_control_plane]

    @property
    def shared_dir(self) -> Path:
        """Return the host side of the hand-off folder (kubeconfig, logs)."""
        return self.root / ".minicluster"

    def node(self, name: str) -> Node:
        """Return the node called ``name``."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def environment(self, node: Node) -> dict[str, str]:
        """Return the MINICLUSTER_* variables the provisioners of ``node`` read."""
        return {
            "MINICLUSTER_PROVIDER": self.provider,
            "MINICLUSTER_NODE_NAME": node.name,
            "MINICLUSTER_NODE_ROLE": node.role,
            "MINICLUSTER_NODE_IP": node.address,
            "MINICLUSTER_CONTROL_PLANE_IP": self.control_plane.address,
            "MINICLUSTER_WORKER_COUNT": str(len(self.workers)),
            "MINICLUSTER_NODE_SUBNET": self.node_subnet,
            "MINICLUSTER_POD_CIDR": self.pod_cidr,
            "MINICLUSTER_SERVICE_CIDR": self.service_cidr,
            "MINICLUSTER_KUBERNETES_VERSION": self.kubernetes_version,
            "MINICLUSTER_KUBERNETES_PACKAGE_REVISION": self.kubernetes_package_revision,
            "MINICLUSTER_CONTAINERD_VERSION": self.containerd_version,
            "MINICLUSTER_FLANNEL_VERSION": self.flannel_version,
            "MINICLUSTER_FLANNEL_CNI_PLUGIN_VERSION": self.flannel_cni_plugin_version,
            "MINICLUSTER_NFS_SERVER_IP": self.nfs.server_address,
            "MINICLUSTER_NFS_EXPORT_PATH": self.nfs.export_path,
            "MINICLUSTER_NFS_MOUNT_POINT": self.nfs.mount_point,
            "MINICLUSTER_NGINX_IMAGE": self.nginx.image,
            "MINICLUSTER_NGINX_REPLICAS": str(self.nginx.replicas),
            "MINICLUSTER_NGINX_NODE_PORT": str(self.nginx.node_port),
            "MINICLUSTER_BUNDLE_DIR": GUEST_BUNDLE_DIR if self.bundle_path else "",
            "MINICLUSTER_SHARED_DIR": GUEST_SHARED_DIR,
        }

    def provisioners(self, node: Node) -> list[str]:
        """Return the provisioner names of ``node``, in the order they run."""
        names = ["node"]
        if node.name == self.nfs.server:
            names.append("nfs-server")
        names.append("control-plane" if node.is_control_plane else "join")
        names.append("nfs-mount")
        if node == self.nodes[-1]:
            names.append("nginx-demo")  # once, after every node has joined
        return names

    def docker_create_args(self) -> list[str]:
        """Return the `docker run` flags of a systemd node container."""
        docker = self.providers["docker"]
        args = docker_create_args(privileged=docker["privileged"])
        if self.bundle_path:
            args += ["-v", f"{self.bundle_path}:{GUEST_BUNDLE_DIR}:ro"]
        return args

    def synced_folders(self) -> list[dict[str, Any]]:
        """Return the folders shared into every node: the checkout, and the bundle."""
        options: dict[str, Any] = {}
        if self.provider == "libvirt":
            options["type"] = self.providers["libvirt"]["synced_folder_type"]
            if options["type"] == "nfs":
                options |= {"nfs_version": 4, "nfs_udp": False}
        folders = [{"host": str(self.root), "guest": GUEST_ROOT, "options": options}]
        if self.bundle_path and self.provider != "docker":
            # Under docker the bundle is a read-only bind mount (docker_create_args).
            ro = {"mount_options": ["ro"]} if not options.get("type") else {}
            folders.append(
                {
                    "host": str(self.bundle_path),
                    "guest": GUEST_BUNDLE_DIR,
                    "options": options | ro,
                }
            )
        return folders

    def vagrant_plan(self) -> dict[str, Any]:
        """Return what the Vagrantfile needs, as plain JSON types."""
        subnet = ipaddress.ip_network(self.node_subnet)
        return {
            "provider": self.provider,
            "provider_source": self.provider_source,
            "box": self.box,
            # Docker's network plugin takes a prefix length, the VM providers a mask.
            "netmask": (
                subnet.prefixlen if self.provider == "docker" else str(subnet.netmask)
            ),
            "synced_folders": self.synced_folders(),
            "nodes": [
                {
                    **asdict(node),
                    "provisioners": self.provisioners(node),
                    "environment": self.environment(node),
                }
                for node in self.nodes
            ],
            "shared_dir": str(self.shared_dir),
            "bundle": {
                "host_dir": str(self.bundle_path) if self.bundle_path else None,
                "guest_dir": GUEST_BUNDLE_DIR,
            },
            "providers": self.providers,
            "docker": {
                "image": self.providers["docker"]["image"],
                "cmd": [DOCKER_ENTRY],
                "create_args": self.docker_create_args(),
            },
        }


def docker_create_args(privileged: bool) -> list[str]:
    """Return the flags that let systemd, containerd and kubelet run in a container.

    ``privileged`` suits ordinary Docker hosts. Without it the node gets every
    capability but CAP_SYS_RESOURCE, for hosts whose bounding set lacks it (there
    ``--privileged`` fails with "unable to apply caps").
    """
    # systemd needs exec-able tmpfs on /tmp, /run and /run/lock (Vagrant's shell
    # provisioner runs /tmp/vagrant-shell); /var as a volume puts containerd's
    # snapshots on the host's filesystem instead of overlay on overlay; a private
    # cgroup namespace gives systemd its own hierarchy; SIGRTMIN+3 is how systemd
    # is asked to shut down.
    common = [
        "--cgroupns=private",
        "--tmpfs", "/tmp:exec,mode=1777",
        "--tmpfs", "/run:exec",
        "--tmpfs", "/run/lock",
        "-v", "/var",
        "-v", "/lib/modules:/lib/modules:ro",
        "--stop-signal", "SIGRTMIN+3",
    ]  # fmt: skip
    if privileged:
        return ["--privileged", *common]
    return [
        "--cap-add", "ALL",
        "--cap-drop", "SYS_RESOURCE",
        "--security-opt", "seccomp=unconfined",
        "--security-opt", "apparmor=unconfined",
        "--security-opt", "systempaths=unconfined",
        "--device-cgroup-rule", "a *:* rwm",
        "--device", "/dev/kmsg",
        "--device", "/dev/fuse",
        *common,
    ]  # fmt: skip


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


# --- the rules ---

Rule = Callable[[dict[str, Any], "Context"], list[str]]


@dataclass
class Context:
    """What the rules know besides the settings: the host and the request."""

    provider: str
    provider_source: str
    root: Path
    networks_conf: str | None  # text of /etc/vbox/networks.conf, None if absent
    nodes: list[Node] = field(default_factory=list)


def check_provider(values: dict[str, Any], ctx: Context) -> list[str]:
    """The provider is one this Vagrantfile knows."""
    problems = []
    if values["provider"] not in PROVIDERS:
        fix = f"use one of {', '.join(PROVIDERS)}"
        problems.append(
            problem("provider", values["provider"], "unknown provider", fix)
        )
    if ctx.provider not in PROVIDERS and ctx.provider_source != "provider":
        fix = f"use one of {', '.join(PROVIDERS)}"
        problems.append(
            problem(ctx.provider_source, ctx.provider, "unknown provider", fix)
        )
    return problems


def check_versions(values: dict[str, Any], ctx: Context) -> list[str]:
    """Every version has the format its consumer expects."""
    problems = []
    version = values["kubernetes.version"]
    match = K8S_VERSION.match(version)
    if not match:
        fix = "write the exact patch release without a v, e.g. 1.36.3"
        if version.startswith("v") and K8S_VERSION.match(version[1:]):
            fix = f"write {version[1:]} (no v)"
        problems.append(problem("kubernetes.version", version, "not X.Y.Z", fix))
    elif f"{match[1]}.{match[2]}" not in SUPPORTED_MINORS:
        what = "not a supported minor"
        fix = f"use a {' or '.join(SUPPORTED_MINORS)} patch release"
        problems.append(problem("kubernetes.version", version, what, fix))
    formats = (
        ("kubernetes.package_revision", PACKAGE_REVISION, "1.1 (as in 1.36.3-1.1)"),
        ("containerd.version", CONTAINERD_VERSION, "1.7.28 or 1.7.28-0ubuntu1~24.04.1"),
        ("flannel.version", FLANNEL_VERSION, "v0.27.4"),
        ("flannel.cni_plugin_version", FLANNEL_CNI_VERSION, "v1.7.1-flannel1"),
        ("box.version", BOX_VERSION, "4.3.12 (an exact box version)"),
    )
    for name, pattern, example in formats:
        if not pattern.match(values[name]):
            fix = f"write a version like {example}"
            problems.append(problem(name, values[name], "not a version", fix))
    if not BOX_NAME.match(values["box.name"]):
        fix = "write ORG/NAME, e.g. generic/ubuntu2404"
        problems.append(problem("box.name", values["box.name"], "not a box name", fix))
    return problems


def check_resources(values: dict[str, Any], ctx: Context) -> list[str]:
    """CPUs, memory and the worker count are within what kubeadm and a host take."""
    problems = []
    minimums = {
        "nodes.control_plane.cpus": (KUBEADM_MIN_CPUS, "kubeadm needs at least 2"),
        "nodes.control_plane.memory_mb": (
            KUBEADM_MIN_MEMORY_MB,
            f"kubeadm needs at least {KUBEADM_MIN_MEMORY_MB} MB on the control plane",
        ),
        "nodes.workers.cpus": (1, "a node needs at least 1"),
        "nodes.workers.memory_mb": (
            WORKER_MIN_MEMORY_MB,
            f"a worker needs at least {WORKER_MIN_MEMORY_MB} MB for kubelet and pods",
        ),
    }
    for name, (least, why) in minimums.items():
        most = MAX_CPUS if name.endswith("cpus") else MAX_MEMORY_MB
        value = values[name]
        if value < least:
            problems.append(problem(name, value, why, f"set {least} or more"))
        elif value > most:
            problems.append(problem(name, value, "too large", f"set at most {most}"))
    count = values["nodes.workers.count"]
    if not 0 <= count <= MAX_WORKERS:
        what = "not a sane worker count"
        fix = f"set 0 (single node) to {MAX_WORKERS}"
        problems.append(problem("nodes.workers.count", count, what, fix))
    return problems


def check_names(values: dict[str, Any], ctx: Context) -> list[str]:
    """Node names are DNS labels (Kubernetes node names, hostnames) and unique."""
    problems = []
    fix = "use lowercase letters, digits and '-', starting and ending alphanumeric"
    cp_name = values["nodes.control_plane.name"]
    if not DNS_LABEL.match(cp_name):
        what = "not a DNS-safe name"
        problems.append(problem("nodes.control_plane.name", cp_name, what, fix))
    prefix = values["nodes.workers.name_prefix"]
    if not DNS_LABEL.match(f"{prefix}-{MAX_WORKERS}"):
        what = "not a DNS-safe name prefix"
        problems.append(problem("nodes.workers.name_prefix", prefix, what, fix))
    elif re.fullmatch(rf"{re.escape(prefix)}-\d+", cp_name):
        what = "the control plane's name is also a worker's"
        fix = "rename the control plane or change the prefix"
        problems.append(problem("nodes.control_plane.name", cp_name, what, fix))
    return problems


def network(name: str, values: dict[str, Any], problems: list[str]) -> Any:
    """Return the IPv4 network of field ``name``, or None after noting why not."""
    text = values[name]
    try:
        net = ipaddress.ip_network(text)
    except ValueError as exc:
        what = "not a network address"
        if "has host bits set" in str(exc):
            fix = f"write {ipaddress.ip_network(text, strict=False)}"
        else:
            fix = "write an IPv4 CIDR such as 10.244.0.0/16"
        problems.append(problem(name, text, what, fix))
        return None
    if net.version != 4:
        problems.append(problem(name, text, "not IPv4", "write an IPv4 CIDR"))
        return None
    return net


def check_networks(values: dict[str, Any], ctx: Context) -> list[str]:
    """Node, pod and service networks are valid and pairwise disjoint."""
    problems: list[str] = []
    names = ("network.node_subnet", "network.pod_cidr", "network.service_cidr")
    nets = {name: network(name, values, problems) for name in names}
    node, pod, service = (nets[name] for name in names)
    if node and not 16 <= node.prefixlen <= 29:
        fix = "use a /16 to /29 network, e.g. 192.168.56.0/24"
        problems.append(problem(names[0], values[names[0]], "unusual size", fix))
    if pod and pod.prefixlen > 22:
        what = "too small: Flannel gives each node a /24"
        problems.append(problem(names[1], values[names[1]], what, "use a /16"))
    if service and not 12 <= service.prefixlen <= 24:
        what = "kube-apiserver takes /12 to /24 service ranges"
        problems.append(problem(names[2], values[names[2]], what, "use 10.96.0.0/12"))
    pairs = ((names[1], names[0]), (names[2], names[0]), (names[2], names[1]))
    for name, other in pairs:
        if nets[name] and nets[other] and nets[name].overlaps(nets[other]):
            what = f"overlaps {other} {values[other]}"
            fix = "choose a range outside it"
            problems.append(problem(name, values[name], what, fix))
    for used, whose, fix in provider_networks(values, ctx.provider):
        for name in names:
            if nets[name] and nets[name].overlaps(used):
                what = f"overlaps {used}, {whose}"
                problems.append(problem(name, values[name], what, fix))
    return problems


def provider_networks(
    values: dict[str, Any], provider: str
) -> list[tuple[Any, str, str]]:
    """Return the networks ``provider`` keeps for itself: network, whose, fix."""
    if provider == "libvirt":
        field = "providers.libvirt.management_network_address"
        try:
            used = ipaddress.ip_network(values[field])
        except ValueError:
            return []  # check_providers names the bad value
        whose = f"libvirt's management network ({field})"
        return [(used, whose, f"choose another range, or move {field}")]
    return [
        (ipaddress.ip_network(used), whose, "choose another range")
        for used, whose in PROVIDER_NETWORKS.get(provider, ())
    ]


def derive_nodes(values: dict[str, Any], problems: list[str]) -> list[Node]:
    """Return the nodes with their addresses, noting any address that cannot be."""
    cp = Node(
        name=values["nodes.control_plane.name"],
        role=CONTROL_PLANE,
        address="",
        cpus=values["nodes.control_plane.cpus"],
        memory_mb=values["nodes.control_plane.memory_mb"],
    )
    workers = [
        Node(
            name=f"{values['nodes.workers.name_prefix']}-{i}",
            role=WORKER,
            address="",
            cpus=values["nodes.workers.cpus"],
            memory_mb=values["nodes.workers.memory_mb"],
        )
        for i in range(1, max(0, min(values["nodes.workers.count"], MAX_WORKERS)) + 1)
    ]
    try:
        first = ipaddress.IPv4Address(values["network.first_address"])
    except ValueError:
        what = "not an IPv4 address"
        fix = "write an address such as 192.168.56.10"
        problems.append(
            problem("network.first_address", values["network.first_address"], what, fix)
        )
        return [cp, *workers]
    pinned = values["nodes.addresses"]
    names = [cp.name] + [w.name for w in workers]
    for name in pinned:
        if name not in names:
            fix = f"use one of {', '.join(names)}"
            problems.append(
                problem(f"nodes.addresses.{name}", pinned[name], "no such node", fix)
            )
    nodes = []
    for index, node in enumerate([cp, *workers]):
        address = str(first + index)
        if node.name in pinned:
            address = str(pinned[node.name])
        nodes.append(Node(node.name, node.role, address, node.cpus, node.memory_mb))
    return nodes


def check_addresses(values: dict[str, Any], ctx: Context) -> list[str]:
    """Every node address is valid, inside the node subnet, usable and unique."""
    problems: list[str] = []
    ctx.nodes = derive_nodes(values, problems)
    if problems:
        return problems
    try:
        subnet = ipaddress.ip_network(values["network.node_subnet"])
    except ValueError:
        return []  # check_networks reports it
    seen: dict[str, str] = {}
    first = values["network.first_address"]
    for node in ctx.nodes:
        name = (
            f"nodes.addresses.{node.name}"
            if node.name in values["nodes.addresses"]
            else "network.first_address"
        )
        shown = node.address if name != "network.first_address" else first
        try:
            address = ipaddress.ip_address(node.address)
        except ValueError:
            fix = "write an IPv4 address"
            problems.append(problem(name, shown, "not an IPv4 address", fix))
            continue
        if address not in subnet:
            what = (
                f"{node.name} would get {address}, outside network.node_subnet {subnet}"
            )
            fix = "pick a first_address with room for every node, or a larger subnet"
            problems.append(problem(name, shown, what, fix))
        elif address in (subnet.network_address, subnet.broadcast_address):
            what = f"{node.name} would get {address}, the network or broadcast address"
            problems.append(problem(name, shown, what, "pick another address"))
        elif address == subnet.network_address + 1:
            what = f"{node.name} would get {address}, which the host or gateway takes"
            problems.append(
                problem(name, shown, what, "start at .2 or above, e.g. .10")
            )
        elif node.address in seen:
            what = f"{node.name} and {seen[node.address]} would both get {address}"
            problems.append(
                problem(name, shown, what, "give every node its own address")
            )
        seen[node.address] = node.name
    return problems


def parse_networks_conf(text: str) -> list[Any]:
    """Return the ranges of an /etc/vbox/networks.conf text.

    >>> parse_networks_conf("* 10.0.0.0/8 192.168.0.0/16\\n* 2001::/64\\n")
    [IPv4Network('10.0.0.0/8'), IPv4Network('192.168.0.0/16'), IPv6Network('2001::/64')]
    """
    ranges = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words[:1] != ["*"]:
            continue
        for word in words[1:]:
            try:
                ranges.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    return ranges


def check_virtualbox_ranges(values: dict[str, Any], ctx: Context) -> list[str]:
    """Under VirtualBox the node subnet is inside a host-only range it allows."""
    if ctx.provider != "virtualbox":
        return []
    try:
        subnet = ipaddress.IPv4Network(values["network.node_subnet"])
    except ValueError:
        return []
    if ctx.networks_conf is None:
        allowed = [ipaddress.ip_network(r) for r in VIRTUALBOX_DEFAULT_RANGES]
        source = "VirtualBox's default host-only range"
    else:
        allowed = parse_networks_conf(ctx.networks_conf)
        source = f"the ranges of {NETWORKS_CONF}"
    if any(
        isinstance(r, ipaddress.IPv4Network) and subnet.subnet_of(r) for r in allowed
    ):
        return []
    shown = ", ".join(map(str, allowed)) or "none"
    what = f"outside {source} ({shown})"
    fix = f"use a subnet inside it, e.g. 192.168.56.0/24, or list it in {NETWORKS_CONF}"
    return [problem("network.node_subnet", values["network.node_subnet"], what, fix)]


def check_services(values: dict[str, Any], ctx: Context) -> list[str]:
    """NFS and the Nginx demo point at real nodes, paths and ports."""
    problems = []
    names = [n.name for n in ctx.nodes]
    if names and values["nfs.server"] not in names:
        fix = f"use one of {', '.join(names)}"
        problems.append(
            problem("nfs.server", values["nfs.server"], "no such node", fix)
        )
    for name in ("nfs.export_path", "nfs.mount_point"):
        path = values[name]
        if (
            not GUEST_PATH.match(path)
            or path == GUEST_ROOT
            or path.startswith(f"{GUEST_ROOT}/")
        ):
            what = "not an absolute path of plain names"
            fix = "write a path such as /srv/nfs/share, outside /vagrant"
            problems.append(problem(name, path, what, fix))
    low, high = NODE_PORT_RANGE
    port = values["nginx.node_port"]
    if not low <= port <= high:
        what = "outside the NodePort range"
        problems.append(problem("nginx.node_port", port, what, f"use {low}-{high}"))
    image = values["nginx.image"]
    for name in ("nginx.image", "providers.docker.image"):
        image = values[name]
        if not IMAGE_REF.match(image):
            what = "not an image reference with a tag"
            fix = "write NAME:TAG, e.g. docker.io/library/nginx:1.29.3"
            problems.append(problem(name, image, what, fix))
        elif image.endswith(":latest"):
            what = "a floating tag"
            fix = "pin a fixed tag so every node runs the same image"
            problems.append(problem(name, image, what, fix))
    replicas = values["nginx.replicas"]
    if not 1 <= replicas <= 10:
        problems.append(
            problem("nginx.replicas", replicas, "out of range", "set 1 to 10")
        )
    return problems


def check_providers(values: dict[str, Any], ctx: Context) -> list[str]:
    """Provider options are ones the Vagrantfile can apply."""
    problems = []
    driver = values["providers.libvirt.driver"]
    if driver not in LIBVIRT_DRIVERS:
        fix = "use kvm, or qemu where the host has no hardware virtualisation"
        problems.append(
            problem("providers.libvirt.driver", driver, "unknown driver", fix)
        )
    kind = values["providers.libvirt.synced_folder_type"]
    if kind not in LIBVIRT_SYNCED_FOLDERS:
        what = "not a two-way shared folder"
        kinds = ", ".join(LIBVIRT_SYNCED_FOLDERS)
        fix = f"use one of {kinds} (the join hand-off needs it)"
        problems.append(
            problem("providers.libvirt.synced_folder_type", kind, what, fix)
        )
    mode = values["providers.libvirt.management_network_mode"]
    if mode not in LIBVIRT_MANAGEMENT_MODES:
        fix = "use nat, or none to keep the guests off every outside network"
        problems.append(
            problem("providers.libvirt.management_network_mode", mode, "unknown", fix)
        )
    name = values["providers.libvirt.management_network_name"]
    if not LIBVIRT_NETWORK_NAME.match(name):
        fix = "use letters, digits, '.', '_' and '-', e.g. vagrant-libvirt"
        problems.append(
            problem("providers.libvirt.management_network_name", name, "bad", fix)
        )
    network("providers.libvirt.management_network_address", values, problems)
    model = values["providers.libvirt.cpu_model"]
    if model and not LIBVIRT_NETWORK_NAME.match(model):
        fix = "write a QEMU CPU model such as qemu64, or leave it empty"
        problems.append(problem("providers.libvirt.cpu_model", model, "bad", fix))
    return problems


def bundle_dir(values: dict[str, Any], root: Path) -> Path | None:
    """Return the host directory of the bundle for this version, or None."""
    text = values["bundle.path"]
    if not text:
        return None
    path = Path(os.path.expanduser(text))
    if not path.is_absolute():
        path = root / path
    if (path / "manifest.json").is_file():
        return path
    return path / f"v{values['kubernetes.version']}"


def check_bundle(values: dict[str, Any], ctx: Context) -> list[str]:
    """A bundle path, when set, holds a bundle of this Kubernetes version."""
    path = bundle_dir(values, ctx.root)
    if path is None or (path / "manifest.json").is_file():
        return []
    what = f"no bundle at {path} (no manifest.json)"
    fix = 'run `minicluster bundle build`, or set bundle.path to "" (upstream)'
    return [problem("bundle.path", values["bundle.path"], what, fix)]


RULES: tuple[Rule, ...] = (
    check_provider,
    check_versions,
    check_resources,
    check_names,
    check_networks,
    check_addresses,
    check_virtualbox_ranges,
    check_services,
    check_providers,
    check_bundle,
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python3 -m harness.settings``: resolve settings for the Vagrantfile."""
    parser = argparse.ArgumentParser(
        prog="python3 -m harness.settings", description=main.__doc__
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="read the Vagrantfile's request (documents, environ, provider, "
        "active_providers, networks_conf, root) as JSON on stdin; print its plan",
    )
    args = parser.parse_args(argv)
    try:
        if args.json:
            request = json.load(sys.stdin)
            settings = resolve(
                request["documents"],
                request.get("environ") or {},
                root=Path(request.get("root") or ROOT),
                provider=request.get("provider"),
                active_providers=request.get("active_providers") or (),
                networks_conf=request.get("networks_conf"),
            )
        else:
            settings = load()
    except SettingsError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    sys.stdout.write(
        json.dumps(settings.vagrant_plan(), indent=2, sort_keys=True) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
