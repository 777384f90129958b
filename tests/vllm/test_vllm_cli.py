"""The vllm runtime's command, parsed by vLLM's own command-line parser.

vLLM cannot run without a GPU here, but its parser can: the test fetches the wheel of the vLLM
that the operator's default image carries (SOVAI_VLLM_IMAGE's tag) from PyPI, unpacks its
Python sources (not its CUDA kernels) into the cache, and gives the parser the exact command and
arguments the serving builder writes into the pod. A flag vLLM does not know, a malformed
--lora-modules or a --max-lora-rank it has no kernels for fails here, not in a customer's pod.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from sovereign_operator.api.v1alpha1.finetunejob import BaseModelSource
from sovereign_operator.api.v1alpha1.modeldeployment import ModelDeploymentSpec
from sovereign_operator.builders.context import BuildConfig, Owner, Residency
from sovereign_operator.builders.serving import (
    VLLM_LORA_RANKS,
    ServedModel,
    ServingConfig,
    build_deployment,
)
from sovereign_operator.config import Settings

pytestmark = pytest.mark.slow

PARSER = Path(__file__).with_name("parse_serve_args.py")
# What vLLM's serve parser imports beyond this project's own dependencies (torch, transformers,
# fastapi, pydantic, ...), pinned; none of them is a GPU library.
PARSER_DEPENDENCIES = (
    "blake3==1.0.11",
    "cbor2==6.3.0",
    "diskcache==5.6.3",
    "msgspec==0.23.0",
    "openai-harmony==0.0.8",
    "partial-json-parser==0.2.1.1.post7",
    "prometheus-fastapi-instrumentator==8.1.0",
    "py-cpuinfo==9.0.0",
    "pybase64==1.5.1",
    "python-multipart==0.0.34",
    "pyzmq==27.3.0",
    "setproctitle==1.3.8",
    "uvloop==0.23.0",
    "watchfiles==1.3.0",
)
OWNER = Owner(name="chat", namespace="team-a", uid="uid-1", kind="ModelDeployment")
RESIDENCY = Residency("eu-only", "topology.kubernetes.io/region", ("eu-west-par",))
CFG = ServingConfig(vllm_image="registry.eu/vllm:1", server_image="registry.eu/sovai:1")
BASE = BaseModelSource(uri="hf://mistralai/Mistral-7B-v0.3", revision="main")


def default_vllm_version() -> str:
    """The version in the tag of the operator's default vLLM image (v0.11.0 -> 0.11.0)."""
    image = Settings.model_fields["vllm_image"].default
    return str(image).rsplit(":", 1)[1].removeprefix("v")


def _pip(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"pip {' '.join(args)}:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="session")
def vllm_path() -> str:
    """PYTHONPATH with vLLM's Python sources and the parser's few extra dependencies, made
    once per version in ${XDG_CACHE_HOME:-~/.cache}/sovereign-ai/vllm-parser/<version>."""
    version = default_vllm_version()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root = cache / "sovereign-ai" / "vllm-parser" / version
    sources, dependencies, ready = root / "src", root / "deps", root / ".ready"
    if not ready.exists():
        wheels = root / "wheel"
        _pip("download", "--no-deps", "--only-binary=:all:", f"vllm=={version}", "-d", str(wheels))
        [wheel] = wheels.glob("vllm-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            python_files = [n for n in archive.namelist() if not n.endswith(".so")]
            archive.extractall(sources, members=python_files)
        _pip("install", "--no-deps", "--target", str(dependencies), *PARSER_DEPENDENCIES)
        wheel.unlink()
        ready.touch()
    return os.pathsep.join([str(sources), str(dependencies)])


def server_argv(spec: dict[str, Any], model: ServedModel) -> list[str]:
    md = ModelDeploymentSpec.model_validate({"model": {"uri": model.uri}, **spec})
    build = BuildConfig(runtime_image="registry.eu/sovai:1")
    pod = build_deployment(md, OWNER, RESIDENCY, model, build, CFG)["spec"]["template"]["spec"]
    server = pod["containers"][0]
    return [*server["command"], *server["args"]]


FULL_MODEL = server_argv(
    {"serving": {"servedModelName": "chat-v3", "maxModelLen": 4096, "tensorParallelSize": 2}},
    ServedModel("models:/chat/3"),
)
ADAPTER_RANKS = {4: 8, 16: 16, 300: 320}  # the adapter's rank: the --max-lora-rank it needs
ADAPTERS = {
    rank: server_argv({}, ServedModel("models:/chat-adapter/1", BASE, adapter_rank=rank))
    for rank in ADAPTER_RANKS
}
MALFORMED = [*FULL_MODEL, "--lora-modules", "adapter-without-a-path"]  # refusals come back
RANKS = [*VLLM_LORA_RANKS, 24]  # 24: between two of vLLM's


@pytest.fixture(scope="module")
def vllm_read(vllm_path: str) -> dict[str, Any]:
    """What vLLM's parser made of every command here, in one process."""
    request = {"commands": [FULL_MODEL, *ADAPTERS.values(), MALFORMED], "loraRanks": RANKS}
    result = subprocess.run(
        [sys.executable, str(PARSER)],
        input=json.dumps(request),
        env={**os.environ, "PYTHONPATH": vllm_path, "VLLM_LOGGING_LEVEL": "ERROR"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"the vLLM parser failed:\n{result.stderr[-4000:]}"
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    full, *adapters, malformed = answer["commands"]
    return {
        "full": full,
        "adapters": dict(zip(ADAPTERS, adapters, strict=True)),
        "malformed": malformed,
        "ranks": {int(r): ok for r, ok in answer["loraRanks"].items()},
    }


def test_the_default_image_is_a_vllm_release_on_pypi() -> None:
    assert default_vllm_version()[0].isdigit(), Settings.model_fields["vllm_image"].default


def test_vllm_reads_the_command_of_a_full_model(vllm_read: dict[str, Any]) -> None:
    assert vllm_read["full"] == {
        "model": "/models/model",
        "served_model_name": ["chat-v3"],
        "enable_lora": False,
        "max_lora_rank": 16,  # vLLM's default; unused without LoRA
        "lora_modules": [],
        "tensor_parallel_size": 2,
        "max_model_len": 4096,
        "host": "0.0.0.0",
        "port": 8000,
    }


@pytest.mark.parametrize(("rank", "max_rank"), ADAPTER_RANKS.items())
def test_vllm_reads_the_command_of_an_adapter_on_its_base(
    vllm_read: dict[str, Any], rank: int, max_rank: int
) -> None:
    assert vllm_read["adapters"][rank] == {
        "model": "/models/base",
        "served_model_name": ["chat-base"],
        "enable_lora": True,
        "max_lora_rank": max_rank,
        "lora_modules": [{"name": "chat", "path": "/models/model"}],
        "tensor_parallel_size": 1,
        "max_model_len": None,
        "host": "0.0.0.0",
        "port": 8000,
    }


def test_a_malformed_command_is_refused_by_the_parser(vllm_read: dict[str, Any]) -> None:
    assert "error" in vllm_read["malformed"], vllm_read["malformed"]


def test_every_max_lora_rank_the_builder_may_choose_is_one_vllm_accepts(
    vllm_read: dict[str, Any],
) -> None:
    assert vllm_read["ranks"] == {**dict.fromkeys(VLLM_LORA_RANKS, True), 24: False}
