"""What each image of the bundle holds: its layers, files and runtime config.

Images built from a Go binary hold that binary over a tiny base (users, /tmp).
kube-proxy and Flannel also need iptables and conntrack, and the Nginx demo needs
nginx, so those sit on layers unpacked from Debian's packages. Layers are shared
between images, so ``docker load`` and containerd store each one once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.bundle.archive import (
    Entry,
    dir_entry,
    disk_entry,
    file_entry,
    symlink_entry,
)

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
GROUP = """\
root:x:0:
www-data:x:33:
nonroot:x:65532:
nogroup:x:65534:
"""


def base_entries() -> list[Entry]:
    """Return what every image but pause starts from: users, groups, /tmp."""
    return [
        file_entry("etc/passwd", PASSWD),
        file_entry("etc/group", GROUP),
        file_entry("etc/nsswitch.conf", "hosts: files dns\npasswd: files\n"),
        dir_entry("root", 0o700),
        dir_entry("tmp", 0o1777),
    ]


# Debian installs iptables through update-alternatives in its postinst, which never
# runs here; link the nftables backend, Debian's default since buster.
IPTABLES_TOOLS = (
    "iptables",
    "iptables-restore",
    "iptables-save",
    "ip6tables",
    "ip6tables-restore",
    "ip6tables-save",
)


def netfilter_extras() -> list[Entry]:
    return [
        symlink_entry(f"usr/sbin/{tool}", "xtables-nft-multi")
        for tool in IPTABLES_TOOLS
    ]


NGINX_CONF = """\
# MiniCluster's demo web server: serves /usr/share/nginx/html on port 80 in the
# foreground, logging to the container's stdout and stderr.
user www-data;
worker_processes 1;
pid /run/nginx.pid;
daemon off;
error_log /dev/stderr notice;

events {
    worker_connections 256;
}

http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /dev/stdout;
    sendfile on;
    keepalive_timeout 65;

    server {
        listen 80 default_server;
        root /usr/share/nginx/html;
        index index.html;
        location / {
            try_files $uri $uri/ =404;
        }
    }
}
"""


def nginx_extras() -> list[Entry]:
    """Return the config, and the directories nginx-common's postinst would make."""
    return [
        file_entry("etc/nginx/nginx.conf", NGINX_CONF),
        dir_entry("var/lib/nginx", 0o755),
        dir_entry("var/log/nginx", 0o755),
        dir_entry("run", 0o755),
        symlink_entry("var/log/nginx/access.log", "/dev/stdout"),
        symlink_entry("var/log/nginx/error.log", "/dev/stderr"),
    ]


@dataclass(frozen=True)
class LayerSpec:
    """A layer: Debian package sets and/or explicit entries, named for its cache."""

    name: str
    debian: tuple[str, ...] = ()  # package-set names, unpacked in this order
    entries: tuple[Entry, ...] = ()


@dataclass(frozen=True)
class ImageSpec:
    """One image of the bundle: its manifest name, reference, layers and config."""

    name: str
    reference: str
    layers: tuple[LayerSpec, ...]
    config: Mapping[str, Any] = field(default_factory=dict)


BASE = LayerSpec("base", entries=tuple(base_entries()))
DEBIAN = LayerSpec("debian", debian=("debian",), entries=tuple(base_entries()))
NETFILTER = LayerSpec(
    "netfilter", debian=("netfilter",), entries=tuple(netfilter_extras())
)
NGINX = LayerSpec("nginx", debian=("nginx",), entries=tuple(nginx_extras()))


def binary_layer(name: str, files: Mapping[str, Path]) -> LayerSpec:
    """Return a layer holding ``files`` (path in the image -> file on disk)."""
    entries = tuple(disk_entry(path, src) for path, src in sorted(files.items()))
    return LayerSpec(name, entries=entries)


KUBE_IMAGES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
)

# name: (layers below the programs, {path in the image: program}, image config)
IMAGES: dict[str, tuple[tuple[LayerSpec, ...], dict[str, str], dict[str, Any]]] = {
    "etcd": (
        (BASE,),
        {"/usr/local/bin/etcd": "etcd", "/usr/local/bin/etcdctl": "etcdctl"},
        {"Entrypoint": ["/usr/local/bin/etcd"]},
    ),
    "coredns": (
        (BASE,),
        {"/coredns": "coredns"},
        {"Entrypoint": ["/coredns"], "ExposedPorts": {"53/tcp": {}, "53/udp": {}}},
    ),
    # Like Kubernetes' own pause image: nothing but the program, run as 65535.
    "pause": (
        (),
        {"/pause": "pause"},
        {"Entrypoint": ["/pause"], "User": "65535:65535"},
    ),
    "flannel": (
        (DEBIAN, NETFILTER),
        {"/opt/bin/flanneld": "flanneld"},
        {"Entrypoint": ["/opt/bin/flanneld"]},
    ),
    # Flannel's DaemonSet runs `cp -f /flannel /opt/cni/bin/flannel` in this image.
    "flannel-cni-plugin": ((DEBIAN,), {"/flannel": "flannel"}, {"Cmd": ["/bin/sh"]}),
    "nginx": (
        (DEBIAN, NGINX),
        {},
        {"Cmd": ["nginx"], "StopSignal": "SIGQUIT", "ExposedPorts": {"80/tcp": {}}},
    ),
}


def image_spec(name: str, reference: str, programs: Mapping[str, Path]) -> ImageSpec:
    """Return image ``name`` holding the built ``programs`` (program -> file)."""
    tag = reference.rsplit(":", 1)[1]
    if name in KUBE_IMAGES:
        # kubeadm's manifests run /usr/local/bin/<command>.
        below: tuple[LayerSpec, ...] = (
            (DEBIAN, NETFILTER) if name == "kube-proxy" else (BASE,)
        )
        files = {f"/usr/local/bin/{name}": name}
        config: dict[str, Any] = {"Entrypoint": [f"/usr/local/bin/{name}"]}
    elif name in IMAGES:
        below, files, config = IMAGES[name]
    else:
        raise KeyError(f"no image is called {name!r}")
    layers = below
    if files:
        found = {path: programs[program] for path, program in files.items()}
        layers = (*below, binary_layer(f"{name}-{tag}", found))
    return ImageSpec(name, reference, layers, {"Env": [f"PATH={PATH}"], **config})
