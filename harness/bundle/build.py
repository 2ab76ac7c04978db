"""The producer of the offline bundle: every step from the registries to the directory.

Work lives in ``<cache>/build/<version>/`` and the finished bundle in
``<cache>/bundle/<version>/``. Each step writes one output there and is skipped
when that output exists, so a second build costs seconds and an interrupted one
resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

from harness.bundle import archive, debian, golang
from harness.bundle.archive import Layer, Tree
from harness.bundle.images import ImageSpec, LayerSpec, image_spec
from harness.bundle.steps import Step, produce, remove, run, run_steps

logger = logging.getLogger(__name__)

FORMAT = 1
KUBE_COMMANDS = ("kubeadm", "kubelet", "kubectl")  # installed on the nodes
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
CNI_MODULE = "github.com/containernetworking/plugins"
CNI_PLUGINS = {
    "bandwidth": "plugins/meta/bandwidth",
    "bridge": "plugins/main/bridge",
    "firewall": "plugins/meta/firewall",
    "host-local": "plugins/ipam/host-local",
    "loopback": "plugins/main/loopback",
    "portmap": "plugins/meta/portmap",
    "ptp": "plugins/main/ptp",
    "tuning": "plugins/meta/tuning",
}
# Debian package sets of the image layers; each set leaves out what "debian" has.
# They and the files below are the recipe of the layers, images and pause: a
# change to any of them gives new outputs instead of reusing the cached ones.
DEBIAN_SETS = {
    "debian": ("base-files", "coreutils", "dash", "netbase"),
    "netfilter": ("iptables", "conntrack", "nftables"),
    "nginx": ("nginx", "bash", "curl", "libc-bin"),
}
RECIPE_FILES = ("archive.py", "debian.py", "images.py", "files/pause.c")


@dataclass(frozen=True)
class Pins:
    """The versions a bundle is built from; the rest come from kubeadm itself."""

    kubernetes: str = "v1.36.3"
    flannel: str = "v0.28.7"  # github.com/flannel-io/flannel (cluster.yaml)
    cni_plugins: str = "v1.9.1"  # github.com/containernetworking/plugins
    # github.com/flannel-io/cni-plugin is not on the module proxy. Its code began as
    # plugins/meta/flannel of containernetworking/plugins, whose last release with
    # it is v0.9.1; that is what installs as /opt/cni/bin/flannel.
    flannel_cni: str = "v0.9.1"


def normalise_version(version: str) -> str:
    """Return ``v1.36.3`` for ``1.36.3`` or ``v1.36.3``."""
    return "v" + version.strip().removeprefix("v")


class Build:
    """One bundle build: the steps, their outputs under the cache, the result."""

    def __init__(self, pins: Pins, cache: Path) -> None:
        self.pins = pins
        self.version = pins.kubernetes
        self.work = cache / "build" / self.version
        self.bundle = cache / "bundle" / self.version

    # --- where each output lives -----------------------------------------------

    def out(self, *parts: str) -> Path:
        return self.work.joinpath(*parts)

    @cached_property
    def recipe(self) -> str:
        """Return a short hash of what the layers, images and pause are made from."""
        digest = hashlib.sha256(json.dumps(DEBIAN_SETS, sort_keys=True).encode())
        package = resources.files("harness.bundle")
        for name in RECIPE_FILES:
            digest.update(f"{name}\n".encode())
            digest.update(package.joinpath(name).read_bytes())
        return digest.hexdigest()[:12]

    def made(self, *parts: str) -> Path:
        """Return an output of the recipe: Debian packages, layers, images, pause."""
        return self.out("recipes", self.recipe, *parts)

    @cached_property
    def image_list(self) -> dict[str, str]:
        """Return kubeadm's images for this version, by short name (``etcd``)."""
        refs = self.out("kubeadm-images.txt").read_text().split()
        return {ref.rsplit("/", 1)[1].split(":")[0]: ref for ref in refs}

    def tag(self, name: str) -> str:
        return self.image_list[name].rsplit(":", 1)[1]

    @property
    def etcd_version(self) -> str:
        return "v" + self.tag("etcd").split("-")[0]  # 3.6.8-0 -> v3.6.8

    # --- the steps ---------------------------------------------------------------

    def steps(self) -> list[Step]:
        v = self.version
        kube = [
            Step(f"building {c} {v}", self.out("bin", c), self.kube_binary(c))
            for c in (*KUBE_COMMANDS[1:], *CONTROL_PLANE, "kube-proxy")
        ]
        images = [
            Step(
                f"writing image {n}",
                self.image_output(n),
                self.image_writer(n),
            )
            for n in self.image_names()
        ]
        return [
            Step(
                f"resolving Kubernetes {v} modules",
                self.out("go", "kubernetes"),
                self.kube_module,
            ),
            Step(
                f"building kubeadm {v}",
                self.out("bin", "kubeadm"),
                self.kube_binary("kubeadm"),
            ),
            Step(
                "listing kubeadm's images",
                self.out("kubeadm-images.txt"),
                self.list_images,
            ),
            *kube,
            Step(
                lambda: f"building etcd {self.etcd_version}",
                self.out("etcd"),
                self.build_etcd,
            ),
            Step(
                lambda: f"building CoreDNS {self.tag('coredns')}",
                self.out("bin", "coredns"),
                self.build_coredns,
            ),
            Step(
                lambda: f"building flanneld {self.pins.flannel}",
                self.out("bin", f"flanneld-{self.pins.flannel}"),
                self.build_flanneld,
            ),
            Step(
                lambda: (
                    f"building the flannel CNI plugin ({CNI_MODULE} "
                    f"{self.pins.flannel_cni})"
                ),
                self.out("bin", f"flannel-cni-{self.pins.flannel_cni}"),
                self.build_flannel_cni,
            ),
            Step(
                lambda: f"building CNI plugins {self.pins.cni_plugins}",
                self.out("cni", self.pins.cni_plugins),
                self.build_cni_plugins,
            ),
            Step(
                lambda: f"compiling pause {self.tag('pause')}",
                self.made("pause"),
                self.build_pause,
            ),
            Step(
                "downloading Debian packages",
                self.made("debs"),
                self.download_debs,
            ),
            *images,
            Step(
                lambda: f"assembling the bundle in {self.bundle}",
                self.bundle,
                self.assemble,
            ),
        ]

    def run(self) -> dict[str, float]:
        """Run every step not yet done; return the seconds each one took."""
        self.drop_other_recipes()
        self.drop_stale_bundle()
        return run_steps(self.steps())

    def drop_other_recipes(self) -> None:
        """Remove the layers, images and packages of any other recipe."""
        current = self.made()
        stale = [p for p in self.out("recipes").glob("*") if p != current]
        # Caches of before recipes had these directly under the build directory.
        stale += [self.out(name) for name in ("debs", "layers", "images")]
        stale.append(self.out("bin", "pause"))
        for path in stale:
            if path.exists():
                logger.info("removing %s: made from another recipe", path)
                remove(path)

    def drop_stale_bundle(self) -> None:
        """Remove a finished bundle that was made from other pinned versions."""
        manifest = self.bundle / "manifest.json"
        if not manifest.is_file():
            return
        saved = json.loads(manifest.read_text())
        made = {**saved.get("components", {}), "recipe": saved.get("recipe")}
        wanted = {
            "recipe": self.recipe,
            "flannel": self.pins.flannel,
            "flannel-cni-plugin": f"{CNI_MODULE} {self.pins.flannel_cni}",
            "cni-plugins": self.pins.cni_plugins,
        }
        changed = [
            f"{k} {made.get(k)} -> {v}" for k, v in wanted.items() if made.get(k) != v
        ]
        if changed:
            logger.info(
                "bundle %s is out of date (%s); assembling it again",
                self.version,
                ", ".join(changed),
            )
            remove(self.bundle)

    def image_output(self, name: str) -> Path:
        """Return the cached archive of ``name``, keyed by what it is built from."""
        pinned = {
            "flannel": self.pins.flannel,
            "flannel-cni-plugin": self.pins.flannel_cni,
        }
        suffix = f"-{pinned[name]}" if name in pinned else ""
        return self.made("images", f"{name}{suffix}.tar")

    # --- Kubernetes ----------------------------------------------------------------

    def kube_module(self, directory: Path) -> None:
        packages = [
            f"k8s.io/kubernetes/cmd/{c}"
            for c in (*KUBE_COMMANDS, *CONTROL_PLANE, "kube-proxy")
        ]
        golang.kubernetes_module(self.version).write(directory, packages)

    def kube_binary(self, command: str) -> Callable[[Path], None]:
        def make(output: Path) -> None:
            flags = golang.kubernetes_ldflags(
                self.version, golang.release_time("k8s.io/kubernetes", self.version)
            )
            golang.build(
                self.out("go", "kubernetes"),
                f"k8s.io/kubernetes/cmd/{command}",
                output,
                ldflags=flags,
            )

        return make

    def list_images(self, output: Path) -> None:
        listed = run(
            "listing kubeadm's images",
            [
                self.out("bin", "kubeadm"),
                "config",
                "images",
                "list",
                "--kubernetes-version",
                self.version,
            ],
        )
        output.write_text(listed)

    # --- companions from their Go modules ------------------------------------------

    def go_module(
        self, name: str, requires: Mapping[str, str], packages: list[str]
    ) -> Path:
        """Write (once) the wrapper module ``name``; return its directory."""
        directory = self.out("go", name)
        if not directory.exists():
            main, version = next(iter(requires.items()))
            upstream = Path(golang.download(main, version)["GoMod"]).read_text()
            found = golang.GO_DIRECTIVE.search(upstream)
            module = golang.WrapperModule(
                name, found.group(1) if found else "1.26.0", dict(requires)
            )
            produce(directory, lambda d: module.write(d, packages))
        return directory

    def build_etcd(self, output: Path) -> None:
        version = self.etcd_version
        etcd = {
            f"go.etcd.io/etcd/{part}/v3": version
            for part in ("server", "etcdctl", "api", "client", "pkg")
        }
        etcd["go.etcd.io/etcd/client/pkg/v3"] = version
        commands = {
            "etcd": "go.etcd.io/etcd/server/v3",
            "etcdctl": "go.etcd.io/etcd/etcdctl/v3",
        }
        module = self.go_module(f"etcd-{version}", etcd, list(commands.values()))
        output.mkdir()
        for name, package in commands.items():
            golang.build(module, package, output / name)

    def build_coredns(self, output: Path) -> None:
        version = self.tag("coredns")
        package = "github.com/coredns/coredns"
        module = self.go_module(f"coredns-{version}", {package: version}, [package])
        golang.build(module, package, output)

    def build_flanneld(self, output: Path) -> None:
        version = self.pins.flannel
        package = "github.com/flannel-io/flannel"
        module = self.go_module(f"flannel-{version}", {package: version}, [package])
        # On amd64 flanneld always links its UDP backend, which is C: like
        # flannel's own release build, use cgo and link statically.
        golang.build(
            module,
            package,
            output,
            ldflags=[f"-X {package}/pkg/version.Version={version}"],
            cgo=True,
        )

    def cni_build(self, version: str, plugins: Mapping[str, str], output: Path) -> None:
        packages = {name: f"{CNI_MODULE}/{path}" for name, path in plugins.items()}
        module = self.go_module(
            f"cni-plugins-{version}", {CNI_MODULE: version}, list(packages.values())
        )
        flags = [f"-X {CNI_MODULE}/pkg/utils/buildversion.BuildVersion={version}"]
        for name, package in packages.items():
            golang.build(module, package, output / name, ldflags=flags)

    def build_flannel_cni(self, output: Path) -> None:
        staging = output.with_name(output.name + ".d")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        self.cni_build(
            self.pins.flannel_cni, {"flannel": "plugins/meta/flannel"}, staging
        )
        os.replace(staging / "flannel", output)
        staging.rmdir()

    def build_cni_plugins(self, output: Path) -> None:
        output.mkdir()
        self.cni_build(self.pins.cni_plugins, CNI_PLUGINS, output)

    def build_pause(self, output: Path) -> None:
        source = resources.files("harness.bundle").joinpath("files/pause.c")
        with resources.as_file(source) as path:
            run(
                "compiling pause",
                [
                    "gcc",
                    "-static",
                    "-O2",
                    "-Wall",
                    "-Wextra",
                    "-Werror",
                    f'-DPAUSE_VERSION="{self.tag("pause")}"',
                    "-o",
                    output,
                    path,
                ],
                hint="install gcc and libc6-dev (`apt-get install gcc libc6-dev`)",
            )
        run("compiling pause", ["strip", output])

    # --- Debian layers ---------------------------------------------------------------

    def download_debs(self, output: Path) -> None:
        base = debian.resolve(DEBIAN_SETS["debian"])
        for name, roots in DEBIAN_SETS.items():
            exclude = () if name == "debian" else base
            packages = debian.resolve(roots, exclude)
            logger.info("Debian set %s: %s", name, " ".join(packages))
            debian.download(packages, output / name)

    # --- images --------------------------------------------------------------------

    def image_names(self) -> list[str]:
        return [
            *CONTROL_PLANE,
            "kube-proxy",
            "etcd",
            "coredns",
            "pause",
            "flannel",
            "flannel-cni-plugin",
            "nginx",
        ]

    def image_spec(self, name: str) -> ImageSpec:
        """Return what image ``name`` holds, from the programs built earlier."""
        bin_, etcd = self.out("bin"), self.out("etcd")
        programs = {
            command: bin_ / command for command in (*CONTROL_PLANE, "kube-proxy")
        }
        programs |= {
            "etcd": etcd / "etcd",
            "etcdctl": etcd / "etcdctl",
            "coredns": bin_ / "coredns",
            "pause": self.made("pause"),
            "flanneld": bin_ / f"flanneld-{self.pins.flannel}",
            "flannel": bin_ / f"flannel-cni-{self.pins.flannel_cni}",
        }
        references = {
            **self.image_list,
            "flannel": f"ghcr.io/flannel-io/flannel:{self.pins.flannel}",
            "flannel-cni-plugin": self.flannel_cni_reference,
            "nginx": self.nginx_reference,
        }
        return image_spec(name, references[name], programs)

    @property
    def flannel_cni_reference(self) -> str:
        # Not flannel-io's own build, so not its name.
        return f"localhost/minicluster/flannel-cni-plugin:{self.pins.flannel_cni}"

    @property
    def nginx_reference(self) -> str:
        version = self.debian_versions()["nginx"]["nginx"]
        return f"localhost/minicluster/nginx:{version.split('-')[0]}"

    def debian_versions(self) -> dict[str, dict[str, str]]:
        return {name: debian.versions(self.made("debs", name)) for name in DEBIAN_SETS}

    def layer(self, spec: LayerSpec) -> Layer:
        """Return the layer ``spec``, writing it once into the cache."""
        path = self.made("layers", f"{spec.name}.tar")
        meta = path.with_suffix(".json")
        if not meta.exists():
            tree = Tree()
            for package_set in spec.debian:
                tree.extend(debian.tree_entries(self.made("debs", package_set)))
            tree.extend(spec.entries)
            produce(path, lambda p: archive.write_layer(tree, p))
            produce(
                meta,
                lambda p: p.write_text(
                    json.dumps(
                        {
                            "digest": archive.sha256_file(path),
                            "created_by": self.created_by(spec),
                        }
                    )
                ),
            )
        saved = json.loads(meta.read_text())
        return Layer(path, saved["digest"], saved["created_by"])

    def created_by(self, spec: LayerSpec) -> str:
        if spec.debian:
            return "minicluster bundle: Debian packages " + ", ".join(spec.debian)
        return f"minicluster bundle: {spec.name}"

    def image_writer(self, name: str) -> Callable[[Path], None]:
        def make(output: Path) -> None:
            spec = self.image_spec(name)
            layers = [self.layer(layer) for layer in spec.layers]
            archive.write_image(output, spec.reference, layers, spec.config)

        return make

    # --- the bundle ------------------------------------------------------------------

    def bundle_files(self) -> dict[str, Path]:
        """Return every file of the bundle but the manifest and SHA256SUMS."""
        files = {f"bin/{c}": self.out("bin", c) for c in KUBE_COMMANDS}
        for plugin in CNI_PLUGINS:
            files[f"cni/bin/{plugin}"] = self.out("cni", self.pins.cni_plugins, plugin)
        files["cni/bin/flannel"] = self.out(
            "bin", f"flannel-cni-{self.pins.flannel_cni}"
        )
        for name in self.image_names():
            files[f"images/{name}.tar"] = self.image_output(name)
        return files

    def manifest(self, sums: Mapping[str, str]) -> dict[str, object]:
        images = {name: self.image_spec(name).reference for name in self.image_names()}
        nginx = self.debian_versions()["nginx"]["nginx"]
        return {
            "format": FORMAT,
            "kubernetes_version": self.version,
            "architecture": "amd64",
            "recipe": self.recipe,
            "components": {
                "kubernetes": self.version,
                "etcd": self.etcd_version,
                "coredns": self.tag("coredns"),
                "pause": self.tag("pause"),
                "flannel": self.pins.flannel,
                "flannel-cni-plugin": f"{CNI_MODULE} {self.pins.flannel_cni}",
                "cni-plugins": self.pins.cni_plugins,
                "nginx": f"{nginx} (Debian)",
                "go": golang.go_version(),
            },
            "images": images,
            "debian_packages": self.debian_versions(),
            "files": dict(sums),
        }

    def assemble(self, directory: Path) -> None:
        sums: dict[str, str] = {}
        for relative, source in sorted(self.bundle_files().items()):
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(source, target)
            sums[relative] = archive.sha256_file(target)
        manifest = json.dumps(self.manifest(sums), indent=2, sort_keys=True) + "\n"
        (directory / "manifest.json").write_text(manifest)
        sums["manifest.json"] = archive.sha256_file(directory / "manifest.json")
        lines = [f"{digest}  {path}\n" for path, digest in sorted(sums.items())]
        (directory / "SHA256SUMS").write_text("".join(lines))


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` (same file system), else copy it."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    target.chmod(0o755 if os.access(source, os.X_OK) else 0o644)
