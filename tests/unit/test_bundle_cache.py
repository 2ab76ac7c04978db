"""The bundle cache: outputs keyed by their recipe, and the other recipes removed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.bundle import build as build_module
from harness.bundle.build import Build, Pins


def test_recipe_changes_with_the_debian_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = Build(Pins(), tmp_path).recipe
    assert Build(Pins(), tmp_path).recipe == before
    more = {**build_module.DEBIAN_SETS, "nginx": ("nginx", "bash", "curl", "vim")}
    monkeypatch.setattr(build_module, "DEBIAN_SETS", more)
    after = Build(Pins(), tmp_path)
    assert after.recipe != before
    # Every recipe output moves with it; the Go binaries stay where they are.
    assert after.image_output("nginx").parent == tmp_path.joinpath(
        "build", "v1.36.3", "recipes", after.recipe, "images"
    )
    assert after.out("bin", "kubeadm") == tmp_path / "build/v1.36.3/bin/kubeadm"


def test_other_recipes_and_the_old_layout_are_removed(tmp_path: Path) -> None:
    build = Build(Pins(), tmp_path)
    kept = [build.made("images", "nginx.tar"), build.out("bin", "kubeadm")]
    dropped = [
        build.out("recipes", "0123456789ab", "images", "nginx.tar"),
        build.out("images", "nginx.tar"),
        build.out("layers", "nginx.tar"),
        build.out("debs", "nginx", "nginx.deb"),
        build.out("bin", "pause"),
    ]
    for path in kept + dropped:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")

    build.drop_other_recipes()

    assert [p for p in kept if not p.exists()] == []
    assert [p for p in dropped if p.exists()] == []
    assert not build.out("recipes", "0123456789ab").exists()


def test_a_bundle_of_another_recipe_is_assembled_again(tmp_path: Path) -> None:
    build = Build(Pins(), tmp_path)
    build.bundle.mkdir(parents=True)
    components = {
        "flannel": build.pins.flannel,
        "flannel-cni-plugin": f"{build_module.CNI_MODULE} {build.pins.flannel_cni}",
        "cni-plugins": build.pins.cni_plugins,
    }
    manifest = build.bundle / "manifest.json"
    manifest.write_text(json.dumps({"recipe": build.recipe, "components": components}))
    build.drop_stale_bundle()
    assert manifest.exists()
    manifest.write_text(json.dumps({"recipe": "other", "components": components}))
    build.drop_stale_bundle()
    assert not build.bundle.exists()
