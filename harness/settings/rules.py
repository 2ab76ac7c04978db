"""The validation rules: each takes the fields and returns its problems."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.settings.model import (
    Node,
)
from harness.settings.schema import (
    BOX_NAME,
    BOX_VERSION,
    CONTAINERD_VERSION,
    CONTROL_PLANE,
    DNS_LABEL,
    FLANNEL_CNI_VERSION,
    FLANNEL_VERSION,
    GUEST_PATH,
    GUEST_ROOT,
    IMAGE_REF,
    K8S_VERSION,
    KUBEADM_MIN_CPUS,
    KUBEADM_MIN_MEMORY_MB,
    LIBVIRT_DRIVERS,
    LIBVIRT_MANAGEMENT_MODES,
    LIBVIRT_NETWORK_NAME,
    LIBVIRT_SYNCED_FOLDERS,
    MAX_CPUS,
    MAX_MEMORY_MB,
    MAX_WORKERS,
    NETWORKS_CONF,
    NODE_PORT_RANGE,
    PACKAGE_REVISION,
    PROVIDER_NETWORKS,
    PROVIDERS,
    SUPPORTED_MINORS,
    VIRTUALBOX_DEFAULT_RANGES,
    WORKER,
    WORKER_MIN_MEMORY_MB,
    problem,
)

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


# libvirt fields with a fixed set of values: field, the values, what is wrong, fix.
LIBVIRT_CHOICES = (
    (
        "driver",
        LIBVIRT_DRIVERS,
        "unknown driver",
        "use kvm, or qemu where the host has no hardware virtualisation",
    ),
    (
        "synced_folder_type",
        LIBVIRT_SYNCED_FOLDERS,
        "not a two-way shared folder",
        f"use one of {', '.join(LIBVIRT_SYNCED_FOLDERS)} (the join hand-off needs it)",
    ),
    (
        "management_network_mode",
        LIBVIRT_MANAGEMENT_MODES,
        "unknown",
        "use nat, or none to keep the guests off every outside network",
    ),
)


def check_providers(values: dict[str, Any], ctx: Context) -> list[str]:
    """Provider options are ones the Vagrantfile can apply."""
    problems = []
    for key, allowed, what, fix in LIBVIRT_CHOICES:
        name = f"providers.libvirt.{key}"
        if values[name] not in allowed:
            problems.append(problem(name, values[name], what, fix))
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
