"""A lab of real hosts on this machine: OpenSSH servers in network namespaces.

Each host gets its own network namespace (its address on a private bridge, its
own net.* sysctls, its own VXLAN device), its own mount namespace (its own
/etc/containerd, /var/lib/kubelet, /etc/fstab and /mnt/share) and its own PID
namespace (its own "containerd" and "kubelet" processes, its own nginx). A fault
made on one host therefore changes that host only, as on separate machines.
Everything is created by :meth:`Lab.start` and removed by :meth:`Lab.stop`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import settings as settings_module
from harness.remote import Host

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
NODE_PORT = 30080
# Directories the hosts mount their own copies over; created here if missing.
MOUNT_POINTS = ("/etc/containerd", "/var/lib/kubelet", "/mnt/share")
# The demo's page, as provision/nginx-demo.sh writes it.
NGINX_PAGE = "<html><body><h1>MiniCluster</h1><p>{name}</p></body></html>\n"

CONTAINERD_TOML = """\
version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true
"""
KUBELET_YAML = """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
"""
FSTAB = """\
# <file system> <mount point> <type> <options> <dump> <pass>
/dev/vda1 / ext4 errors=remount-ro 0 1
#/swap.img none swap sw 0 0
"""


def missing_prerequisites() -> list[str]:
    """Return what this machine lacks to run the lab (empty when it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (network namespaces)")
    for tool in ("ip", "unshare", "ssh-keygen", "nginx"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} not installed")
    if not Path("/usr/sbin/sshd").exists():
        problems.append("/usr/sbin/sshd not installed (apt-get install openssh-server)")
    return problems


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    logger.debug("RUN %s", " ".join(argv))
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def _free_subnet() -> ipaddress.IPv4Network:
    """Return a /24 of 10.123.0.0/16 that no interface of this machine uses."""
    used = _sh("ip", "-o", "-4", "addr", "show").stdout
    for third in range(256):
        net = ipaddress.IPv4Network(f"10.123.{third}.0/24")
        if f" 10.123.{third}." not in used:
            return net
    raise RuntimeError("no free /24 in 10.123.0.0/16 for the lab")


@dataclass
class LabHost:
    """One host of the lab."""

    name: str
    role: str
    address: str
    netns: str
    veth: str
    dir: Path
    process: subprocess.Popen[bytes] | None = None


class Lab:
    """Three (or more) SSH hosts named and addressed like the cluster's nodes."""

    def __init__(self, workdir: Path, workers: int = 2) -> None:
        self.workdir = workdir
        self.run_id = secrets.token_hex(2)
        self.bridge = f"mcbr{self.run_id}"
        self.subnet = _free_subnet()
        self.gateway = str(self.subnet[1])
        names = [("control-plane", "control-plane")] + [
            (f"worker-{i}", "worker") for i in range(1, workers + 1)
        ]
        self.hosts = [
            LabHost(
                name,
                role,
                str(self.subnet[11 + i]),
                f"mc-{self.run_id}-{i}",
                f"mcv{self.run_id}{i}",
                workdir / name,
            )
            for i, (name, role) in enumerate(names)
        ]
        self.key = workdir / "id_ed25519"
        self._created_dirs: list[Path] = []

    # --- set up ---------------------------------------------------------------

    def start(self) -> None:
        try:
            self._keys()
            self._mount_points()
            _sh("ip", "link", "add", self.bridge, "type", "bridge")
            _sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _sh("ip", "link", "set", self.bridge, "up")
            for host in self.hosts:
                self._network(host)
                self._files(host)
                self._boot(host)
            for host in self.hosts:
                self._wait_for_ssh(host)
        except BaseException:
            self.stop()
            raise

    def _keys(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))

    def _mount_points(self) -> None:
        for path in map(Path, MOUNT_POINTS):
            if not path.exists():
                path.mkdir(parents=True)
                self._created_dirs.append(path)

    def _network(self, host: LabHost) -> None:
        ns = host.netns
        _sh("ip", "netns", "add", ns)
        _sh("ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth1",
            "netns", ns)  # fmt: skip
        _sh("ip", "link", "set", host.veth, "master", self.bridge, "up")
        inside = ["ip", "netns", "exec", ns]
        _sh(*inside, "ip", "addr", "add", f"{host.address}/24", "dev", "eth1")
        _sh(*inside, "ip", "link", "set", "eth1", "up")
        _sh(*inside, "ip", "link", "set", "lo", "up")
        # What node.sh sets on a node, here per namespace.
        _sh(*inside, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        _sh(*inside, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
        # Flannel's VXLAN device, bound to the private address as flanneld does.
        _sh(*inside, "ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1",
            "local", host.address, "dev", "eth1", "dstport", "8472")  # fmt: skip

    def _files(self, host: LabHost) -> None:
        d = host.dir
        for sub in ("etc-containerd", "var-lib-kubelet", "bin", "www", "nginx"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "etc-containerd" / "config.toml").write_text(CONTAINERD_TOML)
        (d / "var-lib-kubelet" / "config.yaml").write_text(KUBELET_YAML)
        (d / "fstab").write_text(FSTAB)
        # The services: real processes with the services' names, in this host's
        # PID namespace only.
        for service in ("containerd", "kubelet"):
            shutil.copy2("/bin/sleep", d / "bin" / service)
        (d / "www" / "index.html").write_text(NGINX_PAGE.format(name=host.name))
        (d / "nginx.conf").write_text(self._nginx_conf(host))
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
            str(d / "ssh_host_ed25519_key"))  # fmt: skip
        shutil.copy(f"{self.key}.pub", d / "authorized_keys")
        (d / "sshd_config").write_text(self._sshd_config(host))
        (d / "init.sh").write_text(self._init(host))

    def _nginx_conf(self, host: LabHost) -> str:
        d = host.dir
        return textwrap.dedent(f"""\
            user root;
            pid {d}/nginx/nginx.pid;
            error_log {d}/nginx/error.log;
            events {{ worker_connections 64; }}
            http {{
              access_log off;
              client_body_temp_path {d}/nginx/body;
              proxy_temp_path {d}/nginx/proxy;
              fastcgi_temp_path {d}/nginx/fastcgi;
              uwsgi_temp_path {d}/nginx/uwsgi;
              scgi_temp_path {d}/nginx/scgi;
              server {{
                listen {host.address}:{NODE_PORT};
                root {d}/www;
              }}
            }}
            """)

    def _sshd_config(self, host: LabHost) -> str:
        d = host.dir
        return textwrap.dedent(f"""\
            ListenAddress {host.address}
            Port 22
            HostKey {d}/ssh_host_ed25519_key
            PidFile {d}/sshd.pid
            AuthorizedKeysFile {d}/authorized_keys
            PermitRootLogin prohibit-password
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            UsePAM no
            StrictModes no
            MaxSessions 100
            MaxStartups 100
            """)

    def _init(self, host: LabHost) -> str:
        d = host.dir
        return textwrap.dedent(f"""\
            set -eu
            mount --bind {d}/etc-containerd /etc/containerd
            mount --bind {d}/var-lib-kubelet /var/lib/kubelet
            mount --bind {d}/fstab /etc/fstab
            mount -t tmpfs -o size=1m share /mnt/share
            # A home of its own, as a fresh node has: nothing of this machine's
            # shell start-up runs in a session.
            mount -t tmpfs -o size=1m,mode=0700 home /root
            {d}/bin/containerd infinity &
            {d}/bin/kubelet infinity &
            nginx -c {d}/nginx.conf
            mkdir -p /run/sshd
            exec /usr/sbin/sshd -D -e -f {d}/sshd_config
            """)

    def _boot(self, host: LabHost) -> None:
        with (host.dir / "init.log").open("wb") as log:
            host.process = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--pid",
                 "--fork", "--mount-proc", "--kill-child", "sh",
                 str(host.dir / "init.sh")],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def _wait_for_ssh(self, host: LabHost, timeout_s: float = 15) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert host.process is not None
            if host.process.poll() is not None:
                log = (host.dir / "init.log").read_text(errors="replace")
                raise RuntimeError(f"{host.name} exited at boot:\n{log}")
            try:
                with socket.create_connection((host.address, 22), 1) as conn:
                    if conn.recv(4).startswith(b"SSH"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{host.name}: sshd not answering at {host.address}:22")

    # --- use ------------------------------------------------------------------

    def runners(self) -> dict[str, Host]:
        """Return a fresh harness Host (SSH as root, by key) per lab host."""
        return {
            h.name: Host(h.name, h.address, 22, "root", str(self.key))
            for h in self.hosts
        }

    def settings(self) -> Any:
        """Return real settings naming the lab's hosts as the cluster's nodes."""
        base = (REPO / "cluster.yaml").read_text(encoding="utf-8")
        text = (
            base.replace("provider: virtualbox", "provider: docker")
            .replace("node_subnet: 192.168.56.0/24", f"node_subnet: {self.subnet}")
            .replace(
                "first_address: 192.168.56.10", f"first_address: {self.subnet[11]}"
            )
        )
        path = self.workdir / "cluster.yaml"
        path.write_text(text, encoding="utf-8")
        environ = {"MINICLUSTER_CONFIG": str(path), "PATH": os.environ["PATH"]}
        loaded = settings_module.load(REPO, environ)
        got = [(n.name, n.address) for n in loaded.nodes]
        want = [(h.name, h.address) for h in self.hosts]
        assert got == want, f"lab settings name {got}, the lab has {want}"
        return loaded

    def host(self, name: str) -> LabHost:
        return next(h for h in self.hosts if h.name == name)

    # --- tear down --------------------------------------------------------------

    def stop(self) -> None:
        """Remove everything start made; what is already gone is fine."""
        for host in self.hosts:
            if host.process and host.process.poll() is None:
                os.killpg(host.process.pid, signal.SIGKILL)
                host.process.wait(timeout=10)
            for argv in (("ip", "netns", "del", host.netns),
                         ("ip", "link", "del", host.veth)):  # fmt: skip
                done = _sh(*argv, check=False)
                if done.returncode:
                    logger.debug("%s: %s (already gone)", argv, done.stderr.strip())
        done = _sh("ip", "link", "del", self.bridge, check=False)
        if done.returncode:
            logger.debug("bridge %s: %s (already gone)", self.bridge, done.stderr)
        for path in reversed(self._created_dirs):
            try:
                path.rmdir()
            except OSError as exc:
                logger.warning("left %s in place: %s", path, exc)
        self._created_dirs.clear()
