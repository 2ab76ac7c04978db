"""The command line: exit codes and one-line explanations, no tracebacks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.cluster import created_machines

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """Return a checkout with the repository's cluster.yaml and no cluster."""
    shutil.copy(REPO / "cluster.yaml", tmp_path / "cluster.yaml")
    return tmp_path


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("up", "verify", "status", "diagnose", "kubeconfig", "down"):
        assert f"    {command}" in out


def test_verify_without_cluster_exits_2_with_one_line(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--root", str(checkout), "verify"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("minicluster verify: no cluster has been created in")
    assert "minicluster up" in err


def test_invalid_settings_exit_2_naming_the_field(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (checkout / "cluster.yaml").read_text()
    (checkout / "cluster.yaml").write_text(
        text.replace("pod_cidr: 10.244.0.0/16", "pod_cidr: 192.168.56.0/25")
    )
    assert main(["--root", str(checkout), "verify"]) == 2
    err = capsys.readouterr().err
    assert "network.pod_cidr" in err
    assert "Traceback" not in err


def test_kubeconfig(checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(checkout), "kubeconfig"]) == 2
    (checkout / ".minicluster").mkdir()
    (checkout / ".minicluster" / "kubeconfig").write_text("apiVersion: v1\n")
    assert main(["--root", str(checkout), "kubeconfig", "--export"]) == 0
    assert (
        capsys.readouterr().out
        == f"export KUBECONFIG={checkout}/.minicluster/kubeconfig\n"
    )


def test_down_without_cluster_is_nothing_to_do(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--root", str(checkout), "down"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_bad_k_expression_exits_2(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    machine = checkout / ".vagrant" / "machines" / "worker-1" / "docker"
    machine.mkdir(parents=True)
    (machine / "id").write_text("0a2c9e099f9c")
    # The expression is checked before any machine is asked.
    assert main(["--root", str(checkout), "verify", "-k", "hosts and"]) == 2
    assert "-k 'hosts and'" in capsys.readouterr().err


@pytest.mark.parametrize("dotfile", ["", ".vagrant-other", "ABSOLUTE"])
def test_created_machines_follow_vagrant_dotfile_path(
    checkout: Path, tmp_path_factory: pytest.TempPathFactory, dotfile: str
) -> None:
    # Vagrant writes machines/<name>/<provider>/id once a machine exists.
    if dotfile == "ABSOLUTE":
        dotfile = str(tmp_path_factory.mktemp("dotfile"))
    # A relative VAGRANT_DOTFILE_PATH is relative to the checkout.
    id_file = checkout / (dotfile or ".vagrant") / "machines/worker-1/libvirt/id"
    id_file.parent.mkdir(parents=True)
    id_file.write_text("uuid\n")
    environ = {"VAGRANT_DOTFILE_PATH": dotfile} if dotfile else {}
    assert created_machines(checkout, environ) == ["worker-1"]
    # The same checkout seen through another dotfile folder has no machine.
    assert created_machines(checkout, {"VAGRANT_DOTFILE_PATH": "elsewhere"}) == []
