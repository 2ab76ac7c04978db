"""harness.settings: loading, merging, validation, derivation and the --json CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import settings
from harness.settings import SettingsError

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted((Path(__file__).parent / "corpus").glob("*.yaml"))
NO_NETWORKS_CONF = Path("/nonexistent/networks.conf")

Load = Callable[..., settings.Settings]


def expected_messages(path: Path) -> list[str]:
    """Return the ``# expect:`` lines of a corpus file."""
    prefix = "# expect: "
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line[len(prefix) :] for line in lines if line.startswith(prefix)]


@pytest.fixture
def load(tmp_path: Path) -> Load:
    """Return load() bound to a copy of cluster.yaml, with an empty environment."""
    (tmp_path / "cluster.yaml").write_text((ROOT / "cluster.yaml").read_text())

    def _load(local: str = "", **environ: str) -> settings.Settings:
        if local:
            (tmp_path / "cluster.local.yaml").write_text(local)
        return settings.load(tmp_path, environ, networks_conf=NO_NETWORKS_CONF)

    return _load


def problems_of(call: Callable[[], object]) -> list[str]:
    """Return the problems of the SettingsError that ``call`` raises."""
    with pytest.raises(SettingsError) as info:
        call()
    return info.value.problems


def test_the_default_cluster_has_three_nodes(load: Load) -> None:
    s = load()
    assert [(n.name, n.role, n.address) for n in s.nodes] == [
        ("control-plane", "control-plane", "192.168.56.10"),
        ("worker-1", "worker", "192.168.56.11"),
        ("worker-2", "worker", "192.168.56.12"),
    ]
    assert s.control_plane.name == "control-plane"
    assert [w.name for w in s.workers] == ["worker-1", "worker-2"]
    assert (s.provider, s.provider_source) == ("virtualbox", "provider")
    assert s.nfs.server_address == "192.168.56.10"
    assert s.bundle_path is None


def test_three_workers_give_four_nodes_with_derived_addresses(load: Load) -> None:
    s = load("nodes:\n  workers:\n    count: 3\n")
    assert [(n.name, n.address) for n in s.nodes][-2:] == [
        ("worker-2", "192.168.56.12"),
        ("worker-3", "192.168.56.13"),
    ]


def test_environment_overrides_beat_the_local_file(load: Load) -> None:
    s = load("nodes:\n  workers:\n    count: 3\n", MINICLUSTER_WORKERS="1")
    assert [n.name for n in s.nodes] == ["control-plane", "worker-1"]


def test_the_local_file_merges_key_by_key(load: Load) -> None:
    s = load("nginx:\n  node_port: 31000\n")
    assert (s.nginx.node_port, s.nginx.replicas) == (31000, 2)


def test_a_pinned_address_replaces_the_derived_one(load: Load) -> None:
    s = load("nodes:\n  addresses:\n    worker-2: 192.168.56.30\n")
    assert s.node("worker-2").address == "192.168.56.30"


@pytest.mark.parametrize(
    ("requested", "environ", "active", "expected"),
    [
        ("docker", {"VAGRANT_DEFAULT_PROVIDER": "libvirt"}, ["libvirt"], "--provider"),
        (None, {"VAGRANT_DEFAULT_PROVIDER": "libvirt"}, ["docker"], "VAGRANT_DEFAULT_"),
        (None, {}, ["docker"], "the existing machines (.vagrant)"),
        (None, {}, [], "provider"),  # the setting
    ],
)
def test_provider_precedence_follows_vagrant(
    requested: str | None, environ: dict[str, str], active: list[str], expected: str
) -> None:
    _, source = settings.choose_provider(requested, environ, active, "virtualbox")
    assert source.startswith(expected)


def test_a_bad_environment_value_names_the_variable(load: Load) -> None:
    assert problems_of(lambda: load(MINICLUSTER_WORKERS="many")) == [
        'MINICLUSTER_WORKERS: "many": not a whole number; set a number such as 2'
    ]


def test_an_unknown_requested_provider_is_refused(load: Load) -> None:
    assert problems_of(lambda: load(VAGRANT_DEFAULT_PROVIDER="vmware")) == [
        'VAGRANT_DEFAULT_PROVIDER: "vmware": unknown provider; '
        "use one of virtualbox, libvirt, docker"
    ]


def test_virtualbox_ranges_come_from_networks_conf(tmp_path: Path) -> None:
    conf = tmp_path / "networks.conf"
    conf.write_text("* 10.10.0.0/16\n")
    base = settings.read_yaml(ROOT / "cluster.yaml", ROOT)
    problems = problems_of(
        lambda: settings.resolve([base], {}, networks_conf=conf.read_text())
    )
    assert problems == [
        'network.node_subnet: "192.168.56.0/24": outside the ranges of '
        "/etc/vbox/networks.conf (10.10.0.0/16); use a subnet inside it, e.g. "
        "192.168.56.0/24, or list it in /etc/vbox/networks.conf"
    ]
    # Other providers do not care about VirtualBox's ranges.
    s = settings.resolve([base], {}, provider="libvirt", networks_conf="* 10.0.0.0/8")
    assert s.provider == "libvirt"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("* 192.168.56.0/21\n", ["192.168.56.0/21"]),
        (
            "# comment\n* 10.0.0.0/8 192.168.0.0/16  # two\n",
            ["10.0.0.0/8", "192.168.0.0/16"],
        ),
        ("* 0.0.0.0/0 ::/0\n", ["0.0.0.0/0", "::/0"]),  # allow everything
        ("192.168.0.0/16\n", []),  # no leading '*': not a range line
    ],
)
def test_parse_networks_conf(text: str, expected: list[str]) -> None:
    assert [str(r) for r in settings.parse_networks_conf(text)] == expected


def test_provisioners_run_in_order_on_the_right_nodes(load: Load) -> None:
    s = load()
    assert [s.provisioners(n) for n in s.nodes] == [
        ["node", "nfs-server", "control-plane", "nfs-mount"],
        ["node", "join", "nfs-mount"],
        ["node", "join", "nfs-mount", "nginx-demo"],
    ]


def test_environment_is_the_provisioner_contract(load: Load) -> None:
    s = load()
    env = s.environment(s.node("worker-1"))
    assert env["MINICLUSTER_NODE_IP"] == "192.168.56.11"
    assert env["MINICLUSTER_CONTROL_PLANE_IP"] == "192.168.56.10"
    assert env["MINICLUSTER_KUBERNETES_VERSION"] == "1.36.3"
    assert env["MINICLUSTER_SHARED_DIR"] == "/vagrant/.minicluster"
    assert env["MINICLUSTER_BUNDLE_DIR"] == ""
    assert all(key.startswith("MINICLUSTER_") for key in env)
    assert all(isinstance(value, str) for value in env.values())
    scripts = {p.stem for p in (ROOT / "provision").glob("*.sh")}
    assert set(s.provisioners(s.nodes[-1])) <= scripts | {"nfs-server"}


def test_unprivileged_docker_nodes_get_the_explicit_capability_set() -> None:
    args = settings.docker_create_args(privileged=False)
    assert "--privileged" not in args
    joined = " ".join(args)
    for flag in (
        "--cap-add ALL --cap-drop SYS_RESOURCE",
        "--security-opt seccomp=unconfined",
        "--security-opt apparmor=unconfined",
        "--security-opt systempaths=unconfined",
        "--device /dev/kmsg",
        "--device /dev/fuse",
        "--cgroupns=private",
        "--tmpfs /tmp:exec,mode=1777",
        "--tmpfs /run:exec",
        "-v /var",
        "-v /lib/modules:/lib/modules:ro",
    ):
        assert flag in joined
    assert args[args.index("--device-cgroup-rule") + 1] == "a *:* rwm"
    assert settings.docker_create_args(privileged=True)[0] == "--privileged"


def test_a_bundle_is_mounted_read_only(load: Load, tmp_path: Path) -> None:
    version_dir = tmp_path / "bundle" / "v1.36.3"
    version_dir.mkdir(parents=True)
    (version_dir / "manifest.json").write_text("{}")
    s = load(
        "provider: docker\nproviders:\n  docker:\n    privileged: false\n",
        MINICLUSTER_BUNDLE_PATH=str(tmp_path / "bundle"),
    )
    assert s.bundle_path == version_dir
    assert s.docker_create_args()[-2:] == [
        "-v",
        f"{version_dir}:{settings.GUEST_BUNDLE_DIR}:ro",
    ]
    assert (
        s.environment(s.nodes[0])["MINICLUSTER_BUNDLE_DIR"] == "/opt/minicluster/bundle"
    )


def test_a_missing_bundle_is_refused(load: Load) -> None:
    problems = problems_of(lambda: load(MINICLUSTER_BUNDLE_PATH="/nonexistent"))
    assert problems == [
        'bundle.path: "/nonexistent": no bundle at /nonexistent/v1.36.3 (no '
        'manifest.json); run `minicluster bundle build`, or set bundle.path to "" '
        "(upstream)"
    ]


def test_the_plan_carries_what_the_vagrantfile_needs(load: Load) -> None:
    plan = load(VAGRANT_DEFAULT_PROVIDER="docker").vagrant_plan()
    assert plan["netmask"] == 24  # docker networks take a prefix length
    assert plan["docker"]["cmd"] == ["/usr/local/bin/minicluster-entry"]
    assert [n["name"] for n in plan["nodes"]] == [
        "control-plane",
        "worker-1",
        "worker-2",
    ]
    assert json.loads(json.dumps(plan)) == plan  # plain JSON types only
    vbox = load().vagrant_plan()
    assert vbox["netmask"] == "255.255.255.0"
    assert vbox["synced_folders"][0]["guest"] == "/vagrant"


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_file_gives_its_message(path: Path) -> None:
    environ = {"MINICLUSTER_CONFIG": str(path)}
    problems = problems_of(
        lambda: settings.load(ROOT, environ, networks_conf=NO_NETWORKS_CONF)
    )
    assert problems == expected_messages(path)


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 15
    assert all(expected_messages(p) for p in CORPUS)


def test_a_missing_settings_file_is_reported() -> None:
    problems = problems_of(
        lambda: settings.load(ROOT, {"MINICLUSTER_CONFIG": "nope.yaml"})
    )
    assert problems == [
        'MINICLUSTER_CONFIG: "nope.yaml": no such file; set MINICLUSTER_CONFIG to '
        "an existing file, or restore cluster.yaml"
    ]


def run_cli(request: dict[str, object]) -> subprocess.CompletedProcess[str]:
    """Run ``python3 -m harness.settings --json`` as the Vagrantfile does."""
    return subprocess.run(
        [sys.executable, "-m", "harness.settings", "--json"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def test_cli_prints_the_plan() -> None:
    doc = settings.read_yaml(ROOT / "cluster.yaml", ROOT)
    done = run_cli({"documents": [doc], "environ": {"MINICLUSTER_WORKERS": "3"}})
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert [n["address"] for n in plan["nodes"]][-1] == "192.168.56.13"


def test_cli_prints_the_errors_and_exits_1() -> None:
    error = {"line": 2, "column": 3, "problem": "oops", "context": None}
    done = run_cli({"documents": [{"path": "x.yaml", "error": error}]})
    assert done.returncode == 1
    assert (
        done.stderr == "x.yaml: line 2 column 3: not valid YAML (oops); fix it there\n"
    )
    assert done.stdout == ""


def test_cli_imports_only_the_standard_library() -> None:
    code = (
        "import sys, harness.settings; "
        "print(sorted(m for m in ('yaml', 'vagrant', 'fabric') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert done.stdout.strip() == "[]"
