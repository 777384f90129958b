"""The project's helm is built as helm's release is: it reports its version, and without a
cluster it assumes the Kubernetes version of the client-go it was built with (helm's Makefile
sets it by ldflags; a plain `go install` assumes v1.20 and refuses this chart's kubeVersion)."""

from __future__ import annotations

import re
from pathlib import Path

from chart_render import CHART, REPO_ROOT, helm, run_helm

from sovereign_operator.devcluster.binaries import read_versions


def client_go_version(binary: Path) -> str:
    """The k8s.io/client-go version that the Go toolchain recorded in the binary's build
    information (what `go version -m` prints)."""
    found: set[bytes] = set(
        re.findall(rb"\bdep\tk8s\.io/client-go\t(v[0-9][^\t\n]*)", binary.read_bytes())
    )
    assert len(found) == 1, f"no single k8s.io/client-go in the build information of {binary}"
    return found.pop().decode()


def test_helm_reports_the_version_of_versions_env() -> None:
    result = run_helm("version", "--template", "{{ .Version }}")
    assert result.stdout.strip() == read_versions(REPO_ROOT)["HELM_VERSION"]


def test_helm_template_needs_no_kube_version() -> None:
    result = run_helm("template", "rel", str(CHART))
    assert "kind: Deployment" in result.stdout


def test_helm_assumes_the_kubernetes_of_its_client_go(tmp_path: Path) -> None:
    # client-go v0.N.x goes with Kubernetes v1.N (helm's Makefile: major + 1, same minor).
    minor = client_go_version(helm()).split(".")[1]
    chart = tmp_path / "capabilities"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: capabilities\nversion: 0.1.0\n")
    (chart / "templates" / "kube.yaml").write_text(
        "kubeVersion: {{ .Capabilities.KubeVersion.Version }}\n"
    )
    rendered = re.search(r"^kubeVersion: (\S+)$", run_helm("template", str(chart)).stdout, re.M)
    assert rendered is not None
    assert rendered.group(1) == f"v1.{minor}.0"
