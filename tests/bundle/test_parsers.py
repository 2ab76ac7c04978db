"""The producer's parsers, on output captured from apt-cache and k8s.io/kubernetes."""

from __future__ import annotations

import pytest

from harness.bundle import debian, golang
from harness.bundle.build import normalise_version

# `apt-cache depends --no-recommends ... nginx-common base-files iptables` (bookworm)
APT_DEPENDS = """\
nginx-common
 |Depends: debconf
  Depends: <debconf-2.0>
    cdebconf
    debconf
base-files
  PreDepends: <awk>
    mawk
    gawk
iptables
  Depends: libip4tc2
  Depends: libc6
"""

# The head of k8s.io/kubernetes v1.36.3's go.mod replace block.
KUBERNETES_GO_MOD = """\
module k8s.io/kubernetes

go 1.26.0

godebug default=go1.26

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apimachinery => ./staging/src/k8s.io/apimachinery
\tk8s.io/kubelet => ./staging/src/k8s.io/kubelet
)
"""


def test_apt_dependencies_keep_alternatives_and_providers() -> None:
    assert debian.dependencies(APT_DEPENDS) == [
        ["debconf", "<debconf-2.0>", "cdebconf", "debconf"],  # "a | virtual"
        ["<awk>", "mawk", "gawk"],  # a virtual package and its providers
        ["libip4tc2"],
        ["libc6"],
    ]


def test_staging_replaces_and_directives() -> None:
    assert golang.STAGING_REPLACE.findall(KUBERNETES_GO_MOD) == [
        "k8s.io/api",
        "k8s.io/apimachinery",
        "k8s.io/kubelet",
    ]
    directive = golang.GO_DIRECTIVE.search(KUBERNETES_GO_MOD)
    assert directive is not None
    assert directive.group(1) == "1.26.0"
    assert golang.GODEBUG_LINE.findall(KUBERNETES_GO_MOD) == ["godebug default=go1.26"]


def test_wrapper_module_asks_each_package_at_its_module_version() -> None:
    module = golang.WrapperModule(
        "etcd",
        "1.24.0",
        {"go.etcd.io/etcd/server/v3": "v3.6.8", "go.etcd.io/etcd/etcdctl/v3": "v3.6.8"},
    )
    assert (
        module.query("go.etcd.io/etcd/server/v3") == "go.etcd.io/etcd/server/v3@v3.6.8"
    )
    rendered = module.render()
    assert "module local/minicluster/etcd" in rendered
    assert "\tgo.etcd.io/etcd/etcdctl/v3 v3.6.8" in rendered


def test_kubernetes_ldflags_set_both_version_packages() -> None:
    flags = golang.kubernetes_ldflags("v1.36.3", "2026-07-22T18:07:38Z")
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion=v1.36.3" in flags
        assert f"-X {package}.gitMinor=36" in flags
        assert f"-X {package}.buildDate=2026-07-22T18:07:38Z" in flags


@pytest.mark.parametrize(
    ("given", "expected"),
    [("1.36.3", "v1.36.3"), ("v1.36.3", "v1.36.3"), (" 1.36.3", "v1.36.3")],
)
def test_normalise_version(given: str, expected: str) -> None:
    assert normalise_version(given) == expected
