"""Image names, locks and build inputs: the chart, the settings and `make images` agree."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from chart_render import CHART, REPO_ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from sovereign_operator.config import Settings
from sovereign_operator.images import definitions
from sovereign_operator.images.definitions import (
    BY_NAME,
    DEFINITIONS,
    ImageDefinition,
    inputs_digest,
    mmdebstrap_argv,
)
from sovereign_operator.images.references import (
    OPERATOR_IMAGE,
    OPERATOR_REPOSITORY,
    RUNTIME_IMAGE,
    VERSION,
)

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ \\]+)", re.MULTILINE)


def pins(lock: str) -> dict[str, str]:
    text = (REPO_ROOT / lock).read_text()
    return {canonicalize_name(name): version for name, version in PIN.findall(text)}


OPERATOR_PINS = pins("images/operator/requirements.lock")
RUNTIME_PINS = pins("images/runtime/requirements.lock")


def test_chart_operator_image_is_the_one_make_images_builds() -> None:
    tag = VALUES["image"]["tag"] or CHART_META["appVersion"]
    assert (
        f"{VALUES['image']['repository']}:{tag}" == OPERATOR_IMAGE == BY_NAME["operator"].reference
    )
    assert VALUES["image"]["repository"] == OPERATOR_REPOSITORY
    assert CHART_META["appVersion"] == VERSION == PYPROJECT["project"]["version"]


def test_runtime_image_default_agrees_in_chart_settings_and_build() -> None:
    assert VALUES["config"]["runtimeImage"] == Settings().runtime_image == RUNTIME_IMAGE
    assert BY_NAME["runtime"].reference == RUNTIME_IMAGE


def test_ray_version_of_the_runtime_lock_is_the_operators_default() -> None:
    assert RUNTIME_PINS["ray"] == Settings().ray_version == str(VALUES["config"]["rayVersion"])


def test_operator_lock_carries_no_data_plane() -> None:
    for heavy in ("torch", "ray", "mlflow", "transformers", "triton"):
        assert heavy not in OPERATOR_PINS
    assert {"kopf", "kubernetes", "pydantic"} <= OPERATOR_PINS.keys()


def test_both_locks_pin_shared_packages_to_one_version() -> None:
    shared = OPERATOR_PINS.keys() & RUNTIME_PINS.keys()
    assert shared == OPERATOR_PINS.keys()
    assert {name: OPERATOR_PINS[name] for name in shared} == {
        name: RUNTIME_PINS[name] for name in shared
    }


@pytest.mark.parametrize(
    ("lock", "extras"),
    [
        ("images/operator/requirements.lock", ()),
        ("images/runtime/requirements.lock", ("training",)),
    ],
)
def test_lock_satisfies_every_requirement_of_pyproject(lock: str, extras: tuple[str, ...]) -> None:
    """A dependency changed in pyproject.toml without `make lock` fails here."""
    locked = pins(lock)
    project = PYPROJECT["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        requirements += [Requirement(r) for r in project["optional-dependencies"][extra]]
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in {lock}: run make lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{lock} pins {name}=={locked[name]}, outside {requirement}: run make lock"
        )


def test_runtime_lock_has_the_ray_dashboard() -> None:
    """KubeRay's submitter talks to the head's Job Submission API, served by the dashboard that
    only ray[default] installs (with aiohttp-cors and py-spy, say)."""
    assert {"aiohttp-cors", "py-spy", "ray"} <= RUNTIME_PINS.keys()


def test_every_lock_line_has_a_hash() -> None:
    for definition in DEFINITIONS:
        if definition.lock:
            text = (REPO_ROOT / definition.lock).read_text()
            blocks = re.split(r"\n(?=[A-Za-z0-9])", text.strip())
            assert blocks
            for block in blocks:
                assert "--hash=sha256:" in block, block.splitlines()[0]


def test_runtime_dependency_layers_split_the_lock_exactly() -> None:
    """The runtime installs its lock in three layers, each the entries an awk program selects
    (images/runtime/Containerfile): together they must hold every entry, and each only once."""
    text = (REPO_ROOT / BY_NAME["runtime"].containerfile).read_text()
    programs = re.findall(r"awk '([^']+)'", text)
    assert len(programs) == 3
    runtime_lock = BY_NAME["runtime"].lock
    assert runtime_lock is not None
    lock = REPO_ROOT / runtime_lock
    parts = []
    for program in programs:
        out = subprocess.run(
            ["awk", program, str(lock)], capture_output=True, text=True, check=True
        ).stdout
        parts.append([canonicalize_name(name) for name, _ in PIN.findall(out)])
    assert all(parts)
    every = [name for part in parts for name in part]
    assert sorted(every) == sorted(RUNTIME_PINS)
    assert {"torch", "triton"} == set(parts[1])


def test_definitions_are_in_build_order_and_parents_exist() -> None:
    seen: set[str] = set()
    for definition in DEFINITIONS:
        assert definition.parent is None or definition.parent in seen
        assert (REPO_ROOT / definition.containerfile).is_file()
        text = (REPO_ROOT / definition.containerfile).read_text()
        if definition.parent:
            assert f"ARG {definition.parent_arg}=" in text
            assert f"FROM ${{{definition.parent_arg}}}" in text
        seen.add(definition.name)
    assert [d.name for d in DEFINITIONS if d.published] == ["operator", "runtime"]


def test_code_layer_comes_after_the_dependency_layer() -> None:
    """Changing the project's code must not rebuild the layer with torch in it."""
    for name in ("operator", "runtime"):
        text = (REPO_ROOT / BY_NAME[name].containerfile).read_text()
        assert text.index("--require-hashes") < text.index("COPY dist/")
        assert "USER 1000:1000" in text


def _inputs(tmp_path: Path, definition: ImageDefinition, **changes: str) -> str:
    files = {"containerfile": "FROM ${BASE}\n", "lock": "a==1 --hash=sha256:00\n", **changes}
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "images" / "Containerfile").write_text(files["containerfile"])
    (tmp_path / "images" / "lock").write_text(files["lock"])
    return inputs_digest(
        definition, tmp_path, changes.get("wheel", "sha256:w"), changes.get("parent", "sha256:p")
    )


IMAGE = ImageDefinition(
    "x", "r/x:1", "images/Containerfile", lock="images/lock", wheel=True, parent="base"
)


def test_inputs_digest_is_stable(tmp_path: Path) -> None:
    assert _inputs(tmp_path, IMAGE) == _inputs(tmp_path, IMAGE)


@pytest.mark.parametrize(
    "change",
    [
        {"containerfile": "FROM ${BASE}\nUSER 0\n"},
        {"lock": "a==2 --hash=sha256:01\n"},
        {"wheel": "sha256:other"},
        {"parent": "sha256:other"},
    ],
)
def test_inputs_digest_changes_with_each_input(tmp_path: Path, change: dict[str, str]) -> None:
    assert _inputs(tmp_path, IMAGE, **change) != _inputs(tmp_path, IMAGE)


def test_inputs_digest_ignores_the_wheel_of_an_image_without_it(tmp_path: Path) -> None:
    base = ImageDefinition("b", "r/b:1", "images/Containerfile")
    assert _inputs(tmp_path, base, wheel="sha256:1") == _inputs(tmp_path, base, wheel="sha256:2")


def test_rootfs_comes_from_debian_mirrors_with_security_updates() -> None:
    argv = mmdebstrap_argv(Path("out.tar"))
    assert argv[:3] == ["mmdebstrap", "--variant=minbase", "--quiet"]
    assert "bookworm" in argv
    assert "out.tar" in argv
    assert any("bookworm-security" in source for source in argv)
    assert "--dpkgopt=path-include=/usr/share/doc/*/copyright" in argv
    assert definitions.DEBIAN_SOURCES[0].startswith("deb http://deb.debian.org/debian ")


def test_untagged_images_are_kept_only_as_build_steps_of_a_tagged_image() -> None:
    from sovereign_operator.images.storage import unreferenced

    images = [
        ("runtime", True, ("debian", "base", "torch", "wheel")),
        ("step-torch", False, ("debian", "base", "torch")),  # the layer cache of a code change
        ("step-env", False, ("debian", "base")),
        ("old-runtime", False, ("debian", "base", "torch", "old-wheel")),
        ("old-lock", False, ("debian", "base", "old-torch")),
        ("old-base", False, ("old-debian",)),
    ]
    assert unreferenced(images) == ["old-runtime", "old-lock", "old-base"]
    assert unreferenced([("only", False, ("a",))]) == ["only"]


def test_a_build_without_the_disk_it_needs_fails_with_both_figures(tmp_path: Path) -> None:
    from sovereign_operator.images.storage import StorageError, require_free_space

    with pytest.raises(StorageError, match=r"building runtime needs about 1000000 GiB free under"):
        require_free_space("runtime", 1e6, tmp_path / "not-yet-made")
    require_free_space("runtime", 0.001, tmp_path)
