"""The images `make images` builds, inspected and run (umoci unpacks them, runc runs them)."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest

from sovereign_operator.config import Settings
from sovereign_operator.images.build import BuiltImage, build_images
from sovereign_operator.images.container import Bundle

from .image_inspect import REPO_ROOT, SITE_PACKAGES, installed, locked, sbom_components

pytestmark = pytest.mark.images


def test_second_build_is_a_cache_hit(built: dict[str, BuiltImage], tmp_path: Path) -> None:
    again = {image.name: image for image in build_images(REPO_ROOT, out=tmp_path)}
    assert again.keys() == built.keys() == {"debian", "base", "operator", "runtime", "pause"}
    assert all(image.cached for image in again.values())
    assert {n: i.manifest_digest for n, i in again.items()} == {
        n: i.manifest_digest for n, i in built.items()
    }
    index = json.loads((tmp_path / "images.json").read_text())
    assert [item["name"] for item in index] == ["debian", "base", "operator", "runtime", "pause"]
    assert (tmp_path / "operator.oci.tar").resolve() == Path(built["operator"].archive)


@pytest.mark.parametrize("name", ["operator", "runtime"])
def test_recorded_digest_is_the_archives_manifest(built: dict[str, BuiltImage], name: str) -> None:
    image = built[name]
    with tarfile.open(image.archive) as tar:
        handle = tar.extractfile("index.json")
        assert handle is not None
        (manifest,) = json.load(handle)["manifests"]
    assert manifest["digest"] == image.manifest_digest
    assert manifest["annotations"]["org.opencontainers.image.ref.name"] == image.reference
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image.image_id)
    assert image.unpacked_bytes > image.archive_bytes > 0


def test_operator_image_has_no_data_plane(operator_image: Bundle) -> None:
    packages = installed(operator_image)
    assert {"kopf", "kubernetes", "pydantic", "sovereign-ai-operator"} <= packages.keys()
    for heavy in ("torch", "ray", "mlflow", "transformers", "triton", "peft"):
        assert heavy not in packages
        assert not (operator_image.rootfs / SITE_PACKAGES / heavy).exists()
    lock = locked("operator")
    assert {n: v for n, v in packages.items() if n in lock} == lock


def test_operator_image_runs_as_non_root(operator_image: Bundle) -> None:
    assert operator_image.image_config["User"] == "1000:1000"
    assert operator_image.config["process"]["user"]["uid"] == 1000
    result = operator_image.run(["-c", "import os; print(os.getuid(), os.getgid())"],
                                entrypoint=["python"])  # fmt: skip
    assert (result.returncode, result.stdout.strip()) == (0, "1000 1000"), result.stderr


def test_operator_image_runs_under_a_uid_it_does_not_know(operator_image: Bundle) -> None:
    """Platforms assign uids (OpenShift, a chart's runAsUser): Kopf's peering identity asks
    getpass.getuser(), which must not need /etc/passwd."""
    code = "import getpass, os; print(os.getuid(), getpass.getuser())"
    result = operator_image.run(["-c", code], entrypoint=["python"], uid=4242)
    assert (result.returncode, result.stdout.split()) == (0, ["4242", "sovai"]), result.stderr


def test_operator_help_works_on_a_read_only_root(operator_image: Bundle) -> None:
    assert operator_image.image_config["Entrypoint"] == ["python", "-m", "sovereign_operator"]
    result = operator_image.run(["--help"], read_only=True)
    assert result.returncode == 0, result.stderr
    assert "usage: python -m sovereign_operator" in result.stdout
    assert "SOVAI_RUNTIME_IMAGE" in result.stdout


def test_operator_starts_read_only_and_names_missing_credentials(operator_image: Bundle) -> None:
    """Past --help: settings load, Kopf imports, and with no service account nor kubeconfig it
    stops with the reason (exit 2), without writing to its root filesystem."""
    result = operator_image.run(read_only=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot authenticate to the Kubernetes API" in result.stdout + result.stderr


def test_operator_sbom_lists_its_packages(built: dict[str, BuiltImage]) -> None:
    components = sbom_components(built["operator"])
    assert components["kopf"] == locked("operator")["kopf"]
    assert "python3.11" in components  # Debian's package, from the dpkg database
    assert "torch" not in components


def test_runtime_ray_version_is_the_operators_default(runtime_image: Bundle) -> None:
    result = runtime_image.run(["ray", "--version"], entrypoint=[])
    assert result.returncode == 0, result.stderr
    assert re.search(r"\bversion (\S+)", result.stdout)
    assert result.stdout.split()[-1] == Settings().ray_version


def test_runtime_answers_sovereign_training_help(runtime_image: Bundle) -> None:
    result = runtime_image.run(["python", "-m", "sovereign_training", "--help"], entrypoint=[])
    assert result.returncode == 0, result.stderr
    for command in ("train", "fetch", "serve"):
        assert command in result.stdout


def test_runtime_imports_the_training_stack(runtime_image: Bundle) -> None:
    code = (
        "import torch, ray, mlflow, peft, transformers, sovereign_training.runner; "
        "from ray.dashboard.modules.job.sdk import JobSubmissionClient; "
        "print(torch.__version__.split('+')[0], ray.__version__, mlflow.__version__)"
    )
    result = runtime_image.run(["python", "-c", code], entrypoint=[], timeout=300)
    assert result.returncode == 0, result.stderr
    lock = locked("runtime")
    assert result.stdout.split() == [lock["torch"], lock["ray"], lock["mlflow"]]
    assert {n: v for n, v in installed(runtime_image).items() if n in lock} == lock


def test_runtime_finds_ray_in_a_login_shell_as_kuberay_starts_it(runtime_image: Bundle) -> None:
    """KubeRay runs `bash -lc 'ray start ...'`; Debian's /etc/profile resets PATH. Its default
    probes run wget."""
    result = runtime_image.run(["bash", "-lc", "command -v ray wget; id -u"], entrypoint=[])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["/opt/venv/bin/ray", "/usr/bin/wget", "1000"]


def test_runtime_sbom_lists_ray_and_torch(built: dict[str, BuiltImage]) -> None:
    components = sbom_components(built["runtime"])
    lock = locked("runtime")
    assert components["ray"] == lock["ray"]
    assert components["torch"] == lock["torch"]
