"""A deterministic digest of a model folder, shared by `fetch`, the registry tags and serving.

The digest covers every file's relative path (POSIX form) and contents, in sorted path order, so
it does not depend on the file system, modification times or the order files were written. The
marker file that `fetch` leaves behind (and any other `.sovai-*` file) is excluded, so writing
the marker does not change the digest it records. So is the `registered_model_meta` file that
MLflow's client writes into a folder it downloads from `models:/NAME/VERSION` (the name and
version it was asked for): it is the download's bookkeeping, not part of the model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

MARKER_PREFIX = ".sovai-"
# Written by mlflow.artifacts.download_artifacts at the root of a registered model's folder.
MLFLOW_DOWNLOAD_META = "registered_model_meta"
_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of one file's contents."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_files(root: str | Path) -> list[Path]:
    """The files that make up a model folder, sorted by relative POSIX path."""
    base = Path(root)
    files = [
        p
        for p in base.rglob("*")
        if p.is_file()
        and not any(part.startswith(MARKER_PREFIX) for part in p.parts)
        and p.relative_to(base).as_posix() != MLFLOW_DOWNLOAD_META
    ]
    return sorted(files, key=lambda p: p.relative_to(base).as_posix())


def model_digest(root: str | Path) -> str:
    """`sha256:<hex>` over (relative path, size, contents) of every model file under `root`.

    Raises FileNotFoundError when `root` is not a folder or holds no files.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"model folder not found: {base}")
    files = model_files(base)
    if not files:
        raise FileNotFoundError(f"model folder is empty: {base}")
    total = hashlib.sha256()
    for path in files:
        rel = path.relative_to(base).as_posix().encode("utf-8")
        # Length-prefix each field so that no two different folders hash the same stream.
        total.update(len(rel).to_bytes(8, "big") + rel)
        total.update(path.stat().st_size.to_bytes(8, "big"))
        total.update(bytes.fromhex(file_sha256(path)))
    return "sha256:" + total.hexdigest()
