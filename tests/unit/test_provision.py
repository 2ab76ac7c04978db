"""The provisioners' pure steps, run here with bash: templates, configs, guards.

Each script defines its steps when sourced and runs ``main`` only when executed,
so a test sources it and calls one function. Steps that need a node (apt,
systemd, kubeadm) are left to the cluster runs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import settings

ROOT = Path(__file__).resolve().parents[2]
PROVISION = ROOT / "provision"
SCRIPTS = ["node", "nfs-server", "control-plane", "join", "nfs-mount", "nginx-demo"]


@pytest.fixture
def node_env(tmp_path: Path) -> dict[str, str]:
    """Return the environment the Vagrantfile gives worker-2, in a scratch tree."""
    s = settings.load(ROOT, {}, networks_conf=Path("/nonexistent"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINICLUSTER_")}
    env |= s.environment(s.node("worker-2"))
    env["MINICLUSTER_KUBEADM_CONFIG_DIR"] = str(tmp_path / "kubeadm")
    env["MINICLUSTER_SHARED_DIR"] = str(tmp_path / "shared")
    return env


def bash(
    script: str, code: str, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in bash after sourcing provision/``script``.sh."""
    return subprocess.run(
        ["bash", "-c", f'source "{PROVISION}/{script}.sh"\n{code}'],
        env=env,
        capture_output=True,
        text=True,
        check=check,
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_share_the_strict_header(script: str) -> None:
    text = (PROVISION / f"{script}.sh").read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -o errexit -o nounset -o pipefail\n" in text
    assert os.access(PROVISION / f"{script}.sh", os.X_OK)


@pytest.mark.parametrize("script", SCRIPTS)
def test_sourcing_a_script_runs_nothing(script: str, node_env: dict[str, str]) -> None:
    done = bash(script, "declare -F main >/dev/null && echo defined", node_env)
    assert done.stdout == "defined\n"
    assert done.stderr == ""


def test_write_file_reports_whether_it_changed(
    node_env: dict[str, str], tmp_path: Path
) -> None:
    target = tmp_path / "etc" / "x.conf"
    code = (
        f'write_file "{target}" 0640 <<<a; echo "$FILE_CHANGED"\n'
        f'write_file "{target}" 0640 <<<a; echo "$FILE_CHANGED"\n'
    )
    lines = bash("node", code, node_env).stdout.splitlines()
    assert [lines[1], lines[3]] == ["true", "false"]
    assert lines[2].endswith("is up to date")
    assert oct(target.stat().st_mode & 0o777) == "0o640"


def test_retry_gives_up_with_the_last_output(node_env: dict[str, str]) -> None:
    done = bash(
        "node", "retry 2 0 'the answer' bash -c 'echo no; exit 3'", node_env, False
    )
    assert done.returncode == 1
    assert "on try 1/2, the answer: no" in done.stdout
    assert "timed out waiting for the answer; tried 2 times, 0 s apart" in done.stderr


def test_require_env_names_every_missing_variable(node_env: dict[str, str]) -> None:
    done = bash(
        "node",
        "require_env MINICLUSTER_NOPE MINICLUSTER_NODE_IP MINICLUSTER_X",
        node_env,
        False,
    )
    assert done.returncode == 1
    assert "not set: MINICLUSTER_NOPE MINICLUSTER_X;" in done.stderr


def test_artifact_source_needs_a_manifest(
    node_env: dict[str, str], tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    env = node_env | {"MINICLUSTER_BUNDLE_DIR": str(bundle)}
    assert bash("node", "artifact_source", env).stdout == "upstream\n"
    (bundle / "manifest.json").write_text("{}")
    assert bash("node", "artifact_source", env).stdout == "bundle\n"
    assert bash("node", "artifact_source", node_env).stdout == "upstream\n"


def test_private_interface_is_found_by_address(node_env: dict[str, str]) -> None:
    env = node_env | {"MINICLUSTER_NODE_IP": "127.0.0.1"}
    assert bash("node", "private_interface", env).stdout == "lo\n"
    env = node_env | {"MINICLUSTER_NODE_IP": "192.0.2.77"}  # TEST-NET: on no host
    done = bash("node", "private_interface", env, False)
    assert "no interface holds 192.0.2.77" in done.stderr


# `containerd config default` of the two major versions, trimmed to what changes.
CONTAINERD_1 = """\
version = 2
[plugins."io.containerd.grpc.v1.cri"]
    restrict_oom_score_adj = false
    sandbox_image = "registry.k8s.io/pause:3.6"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
"""
CONTAINERD_2 = """\
version = 3
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = 'registry.k8s.io/pause:3.10'
  [plugins.'io.containerd.cri.v1.runtime']
    restrict_oom_score_adj = false
          [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
            SystemdCgroup = false
            sandbox_mode = 'podsandbox'
"""


@pytest.mark.parametrize(
    ("default", "pause_line"),
    [
        (CONTAINERD_1, '    sandbox_image = "registry.k8s.io/pause:3.10.1"'),
        (CONTAINERD_2, "    sandbox = 'registry.k8s.io/pause:3.10.1'"),
    ],
    ids=["containerd-1.x", "containerd-2.x"],
)
def test_containerd_config_gets_systemd_cgroups_and_the_pause_image(
    node_env: dict[str, str], default: str, pause_line: str
) -> None:
    code = "edit_containerd_config registry.k8s.io/pause:3.10.1 true"
    done = subprocess.run(
        ["bash", "-c", f'source "{PROVISION}/node.sh"\n{code}'],
        input=default,
        env=node_env,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert pause_line in lines
    assert sum("SystemdCgroup = true" in line for line in lines) == 1
    assert any(line.strip() == "restrict_oom_score_adj = true" for line in lines)
    assert ("sandbox_mode" in done.stdout) == ("sandbox_mode" in default)  # untouched


def yaml_documents(text: str) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_flannel_manifest_binds_to_each_nodes_private_address(
    node_env: dict[str, str], tmp_path: Path
) -> None:
    code = (
        "POD_CIDR=10.244.0.0/16 FLANNEL_IMAGE=f:1 FLANNEL_CNI_PLUGIN_IMAGE=p:1 "
        'render_template "$FLANNEL_TEMPLATE" '
        "POD_CIDR FLANNEL_IMAGE FLANNEL_CNI_PLUGIN_IMAGE"
    )
    docs = yaml_documents(bash("control-plane", code, node_env).stdout)
    kinds = [d["kind"] for d in docs]
    assert kinds == [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
    ]
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert '"Network": "10.244.0.0/16"' in config["data"]["net-conf.json"]
    pod = next(d for d in docs if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]
    flannel = pod["containers"][0]
    assert "--iface=$(NODE_IP)" in flannel["args"]
    node_ip = next(e for e in flannel["env"] if e["name"] == "NODE_IP")
    assert node_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    images = [c["image"] for c in pod["initContainers"] + pod["containers"]]
    assert images == ["p:1", "f:1", "f:1"]


def test_render_template_refuses_a_placeholder_left_over(
    node_env: dict[str, str], tmp_path: Path
) -> None:
    template = tmp_path / "t.tmpl"
    template.write_text("a: ${A}\nb: ${B}\n")
    done = bash("control-plane", f'A=1 render_template "{template}" A', node_env, False)
    assert done.returncode == 1
    assert "still has a placeholder after rendering: ${B}" in done.stderr


def test_kubeadm_init_config_is_explicit(
    node_env: dict[str, str], tmp_path: Path
) -> None:
    s = settings.load(ROOT, {}, networks_conf=Path("/nonexistent"))
    env = node_env | s.environment(s.control_plane)
    env["MINICLUSTER_KUBEADM_CONFIG_DIR"] = str(tmp_path / "kubeadm")
    bash("control-plane", "write_init_config", env)
    docs = yaml_documents((tmp_path / "kubeadm" / "init.yaml").read_text())
    init, cluster, kubelet = docs[:3]
    assert init["localAPIEndpoint"]["advertiseAddress"] == "192.168.56.10"
    assert init["nodeRegistration"]["kubeletExtraArgs"] == [
        {"name": "node-ip", "value": "192.168.56.10"}
    ]
    assert cluster["kubernetesVersion"] == "v1.36.3"
    assert cluster["networking"] == {
        "podSubnet": "10.244.0.0/16",
        "serviceSubnet": "10.96.0.0/12",
    }
    assert kubelet["cgroupDriver"] == "systemd"
    assert oct((tmp_path / "kubeadm" / "init.yaml").stat().st_mode & 0o777) == "0o600"


def test_kubelet_in_a_container_tolerates_the_hosts_swap(
    node_env: dict[str, str], tmp_path: Path
) -> None:
    env = node_env | {"MINICLUSTER_PROVIDER": "docker"}
    kubelet = yaml.safe_load(bash("control-plane", "kubelet_configuration", env).stdout)
    assert kubelet["failSwapOn"] is False
    cgroup_v1 = Path("/sys/fs/cgroup").is_dir() and (
        subprocess.run(
            ["stat", "-f", "-c", "%T", "/sys/fs/cgroup"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        != "cgroup2fs"
    )
    assert kubelet.get("failCgroupV1", True) is (not cgroup_v1)
    registration = bash("control-plane", "kubeadm_node_registration", env).stdout
    assert "- Swap" in registration
    assert "- SystemVerification" in registration


def test_nginx_demo_without_nfs_serves_a_configmap(
    node_env: dict[str, str], tmp_path: Path
) -> None:
    env = node_env | {"MINICLUSTER_NFS_MOUNT_POINT": str(tmp_path / "not-mounted")}
    done = bash("nginx-demo", "write_page; write_manifest", env)
    assert "the NFS-backed volume is not applicable" in done.stderr
    docs = yaml_documents((tmp_path / "kubeadm" / "nginx-demo.yaml").read_text())
    by_kind = {d["kind"]: d for d in docs}
    assert "MiniCluster" in by_kind["ConfigMap"]["data"]["index.html"]
    assert "PersistentVolumeClaim" not in by_kind
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "docker.io/library/nginx:1.29.3"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert by_kind["Deployment"]["spec"]["replicas"] == 2
    assert (
        pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    )
    assert pod["volumes"] == [{"name": "page", "configMap": {"name": "page"}}]
    service = by_kind["Service"]["spec"]
    assert (service["type"], service["ports"][0]["nodePort"]) == ("NodePort", 30080)
