"""Load, merge, validate and derive the cluster settings of ``cluster.yaml``.

This package is the only place where settings are checked and derived. The harness
calls :func:`load`; the Vagrantfile parses the YAML with Ruby and pipes the
documents to ``python3 -m harness.settings --json``, which prints the resolved
settings or the errors. Both paths go through :func:`resolve`, so the same bad
file gives the same message. Only the standard library is imported at module
level because the Vagrantfile runs this with the host's plain ``python3``.

Its modules, in reading order: ``schema`` (the fields and their types), ``model``
(the resolved settings), ``rules`` (what makes the fields valid) and ``loading``
(files, environment and provider, put together).
"""

from __future__ import annotations

from harness.settings.loading import (
    active_providers,
    choose_provider,
    dotfile_dir,
    load,
    read_yaml,
    resolve,
    settings_paths,
)
from harness.settings.model import Nfs, Nginx, Node, Settings, docker_create_args
from harness.settings.rules import parse_networks_conf
from harness.settings.schema import (
    CONTROL_PLANE,
    GUEST_BUNDLE_DIR,
    GUEST_ROOT,
    GUEST_SHARED_DIR,
    LOCAL_FILE,
    NETWORKS_CONF,
    PROVIDERS,
    ROOT,
    SETTINGS_FILE,
    WORKER,
    SettingsError,
    merge,
)

__all__ = [
    "CONTROL_PLANE",
    "GUEST_BUNDLE_DIR",
    "GUEST_ROOT",
    "GUEST_SHARED_DIR",
    "LOCAL_FILE",
    "NETWORKS_CONF",
    "PROVIDERS",
    "ROOT",
    "SETTINGS_FILE",
    "WORKER",
    "Nfs",
    "Nginx",
    "Node",
    "Settings",
    "SettingsError",
    "active_providers",
    "choose_provider",
    "docker_create_args",
    "dotfile_dir",
    "load",
    "merge",
    "parse_networks_conf",
    "read_yaml",
    "resolve",
    "settings_paths",
]
