"""harness.vagrant on captured Vagrant 2.3.4 output, through a stand-in executable."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from harness.errors import NoCluster, VagrantError
from harness.vagrant import (
    NOT_CREATED,
    RUNNING,
    STOPPED,
    Progress,
    SSHInfo,
    Vagrant,
    parse_progress,
    parse_ssh_config,
)
from tests.unit.fakes import DATA, data

# Prints the captured output named by FAKE_<COMMAND> and exits FAKE_<COMMAND>_RC;
# records its arguments and environment for the test to read.
FAKE_VAGRANT = """#!/bin/sh
echo "$*" >> "$FAKE_LOG"
env > "$FAKE_ENV"
case "$1" in
  status) out="$FAKE_STATUS"; err=""; rc="${FAKE_STATUS_RC:-0}" ;;
  ssh-config)
    out="$FAKE_SSH_CONFIG"; err="${FAKE_SSH_CONFIG_ERR:-}"
    rc="${FAKE_SSH_CONFIG_RC:-0}"
    # Asked by machine name: the running machine answers.
    [ $# -gt 1 ] && { err=""; rc=0; } ;;
  up) out="$FAKE_UP"; err="${FAKE_UP_ERR:-}"; rc="${FAKE_UP_RC:-0}" ;;
  *) out=""; err=""; rc=0 ;;
esac
[ -n "$out" ] && cat "$out"
[ -n "$err" ] && cat "$err" >&2
exit "$rc"
"""


@pytest.fixture
def fake_vagrant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a stand-in ``vagrant`` first on PATH; return its directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "vagrant"
    exe.write_text(FAKE_VAGRANT)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls"))
    monkeypatch.setenv("FAKE_ENV", str(tmp_path / "env"))
    monkeypatch.setenv("FAKE_STATUS", str(DATA / "vagrant-status-running.txt"))
    monkeypatch.setenv("FAKE_SSH_CONFIG", str(DATA / "vagrant-ssh-config-docker.txt"))
    return tmp_path


def calls(tmp: Path) -> list[str]:
    return (tmp / "calls").read_text().splitlines()


@pytest.mark.parametrize(
    ("capture", "states"),
    [
        # before vagrant up: every machine not_created
        (
            "vagrant-status-not-created.txt",
            {
                "control-plane": NOT_CREATED,
                "worker-1": NOT_CREATED,
                "worker-2": NOT_CREATED,
            },
        ),
        ("vagrant-status-running.txt", {"control-plane": RUNNING, "worker-1": RUNNING}),
        # docker's halted state is "stopped", not virtualbox's "poweroff"
        (
            "vagrant-status-halted-worker.txt",
            {"control-plane": RUNNING, "worker-1": STOPPED},
        ),
    ],
)
def test_status_reads_each_machine(
    fake_vagrant: Path,
    monkeypatch: pytest.MonkeyPatch,
    capture: str,
    states: dict[str, str],
) -> None:
    monkeypatch.setenv("FAKE_STATUS", str(DATA / capture))
    got = Vagrant(fake_vagrant, "docker").status()
    assert {s.name: s.state for s in got} == states
    assert {s.provider for s in got} == {"docker"}


def test_status_failure_raises_with_vagrants_words(
    fake_vagrant: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "FAKE_STATUS", str(DATA / "vagrant-status-machine-not-found.txt")
    )
    monkeypatch.setenv("FAKE_STATUS_RC", "1")
    with pytest.raises(VagrantError) as info:
        Vagrant(fake_vagrant).status()
    assert info.value.exited == 1
    assert "vagrant status --machine-readable exited 1" in str(info.value)
    # The machine-readable error, decoded: commas and line breaks restored.
    assert (
        "The machine with the name 'nosuch' was not found configured for this "
        "Vagrant environment. (Vagrant::Errors::MachineNotFound)"
    ) in str(info.value)


def test_environment_is_kept_and_extended(
    fake_vagrant: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINICLUSTER_MARK", "kept")
    Vagrant(fake_vagrant, "docker").status()
    env = dict(
        line.split("=", 1)
        for line in (fake_vagrant / "env").read_text().splitlines()
        if "=" in line
    )
    # python-vagrant's env= replaces the environment: ours must be passed whole.
    assert env["MINICLUSTER_MARK"] == "kept"
    assert env["HOME"] == os.environ["HOME"]
    assert env["VAGRANT_DEFAULT_PROVIDER"] == "docker"
    assert env["VAGRANT_CHECKPOINT_DISABLE"] == "1"


def test_ssh_config_of_all_machines_in_one_call(fake_vagrant: Path) -> None:
    infos = Vagrant(fake_vagrant, "docker").ssh_config()
    key = "/tmp/vcap2/.vagrant/machines/worker-1/docker/private_key"
    assert infos["worker-1"] == SSHInfo("worker-1", "127.0.0.1", 2200, "vagrant", key)
    assert infos["control-plane"].port == 2222
    assert calls(fake_vagrant) == ["ssh-config"]


def test_ssh_config_with_a_halted_machine_asks_the_running_ones(
    fake_vagrant: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # vagrant ssh-config exits 1 when any machine is down (captured stderr).
    monkeypatch.setenv(
        "FAKE_SSH_CONFIG", str(DATA / "vagrant-ssh-config-halted-worker.txt")
    )
    monkeypatch.setenv(
        "FAKE_SSH_CONFIG_ERR", str(DATA / "vagrant-ssh-config-halted-worker.err")
    )
    monkeypatch.setenv("FAKE_SSH_CONFIG_RC", "1")
    monkeypatch.setenv("FAKE_STATUS", str(DATA / "vagrant-status-halted-worker.txt"))
    infos = Vagrant(fake_vagrant, "docker").ssh_config()
    assert list(infos) == ["control-plane"]
    assert calls(fake_vagrant) == [
        "ssh-config",
        "status --machine-readable",
        "ssh-config control-plane",
    ]


def test_ssh_config_with_nothing_running_is_no_cluster(
    fake_vagrant: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SSH_CONFIG_RC", "1")
    monkeypatch.setenv("FAKE_STATUS", str(DATA / "vagrant-status-not-created.txt"))
    with pytest.raises(NoCluster, match="no machine is running"):
        Vagrant(fake_vagrant).ssh_config()


def test_missing_vagrant_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(VagrantError, match="apt-get install vagrant"):
        Vagrant(tmp_path).status()


def test_parse_ssh_config_quoted_and_unordered() -> None:
    text = (
        "Host a\n  Port 2201\n  User vagrant\n  HostName 127.0.0.1\n"
        '  IdentityFile "/path with space/key"\n'
    )
    assert parse_ssh_config(text)["a"].key_filename == "/path with space/key"


def test_parse_ssh_config_without_port_names_the_machine() -> None:
    with pytest.raises(VagrantError, match="no port for 'a'"):
        parse_ssh_config("Host a\n  HostName 127.0.0.1\n  User vagrant\n")


def test_up_progress_from_captured_output() -> None:
    provisioners: dict[str, str] = {}
    phases = []
    for line in data("vagrant-up-docker.txt").splitlines(keepends=True):
        progress = parse_progress(line, provisioners)
        if progress and progress.provisioner and not progress.output:
            provisioners[progress.node] = progress.provisioner
        if progress and not progress.output:
            phases.append((progress.node, progress.phase))
    assert phases[0] == ("control-plane", "Creating and configuring docker networks")
    assert ("control-plane", "provisioning node.sh") in phases
    assert ("worker-1", "provisioning join.sh") in phases
    assert phases.index(("control-plane", "provisioning join.sh")) < phases.index(
        ("worker-1", "Creating the container")
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "==> worker-1: Running provisioner: join.sh (shell)...\n",
            Progress("worker-1", "provisioning join.sh", "join.sh"),
        ),
        (
            "==> worker-1: Machine booted and ready!\n",
            Progress("worker-1", "Machine booted and ready!"),
        ),
        # a provisioner's own output line is attributed to the one running
        (
            "    worker-1: joining worker-1\n",
            Progress("worker-1", "joining worker-1", "join.sh", output=True),
        ),
        ("Bringing machine 'worker-1' up with 'docker' provider...\n", None),
    ],
)
def test_parse_progress_lines(line: str, expected: Progress | None) -> None:
    assert parse_progress(line, {"worker-1": "join.sh"}) == expected


def test_up_failure_carries_stderr(
    fake_vagrant: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    err = tmp_path / "up.err"
    err.write_text(
        "The container failed to start: /tmp/vagrant-shell: Permission denied\n"
    )
    monkeypatch.setenv("FAKE_UP", str(DATA / "vagrant-up-docker.txt"))
    monkeypatch.setenv("FAKE_UP_ERR", str(err))
    monkeypatch.setenv("FAKE_UP_RC", "1")
    lines: list[str] = []
    with pytest.raises(VagrantError) as info:
        lines.extend(Vagrant(fake_vagrant, "docker").up())
    assert lines[0].startswith("Bringing machine 'control-plane' up")
    assert info.value.exited == 1
    assert "Permission denied" in str(info.value)
