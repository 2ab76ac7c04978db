"""The resolved settings: nodes, the NFS share, Nginx, and what Vagrant is given."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.settings.schema import (
    CONTROL_PLANE,
    DOCKER_ENTRY,
    GUEST_BUNDLE_DIR,
    GUEST_ROOT,
    GUEST_SHARED_DIR,
)


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
