"""Small helpers shared across the package: hashing, atomic writes, seeds, devices, the cache,
prefetching."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np


def default_cache_dir() -> Path:
    """``$SIGCLASS_CACHE_DIR``, else ``~/.cache/sigclass``: features, ONNX graphs, downloads."""
    env = os.environ.get("SIGCLASS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sigclass"


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex SHA-256 of the canonical JSON form of ``obj`` (a stable cache key)."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode())


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write a file so that readers see either the old or the complete new content.

    ``write`` receives a temporary path in the same folder; it is renamed over ``path`` once
    ``write`` returns, so a crash or Ctrl-C in the middle never leaves a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return atomic_write(
        path, lambda p: p.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    )


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write a text file."""
    return atomic_write(path, lambda p: p.write_text(text))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(device: str | None = None):
    """``torch.device`` to run on: CUDA when present unless ``device`` says otherwise."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def environment_info(device: str | None = None) -> dict[str, Any]:
    """Versions of Python and the packages a model depends on, and the device, for run records."""
    versions = {"python": platform.python_version()}
    for name in ("sigclass", "torch", "torchvision", "timm", "scikit-learn", "numpy",
                 "onnxruntime", "aeon"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    resolved = resolve_device(device)
    name = str(resolved)
    if resolved.type == "cuda":
        import torch

        name = f"cuda ({torch.cuda.get_device_name(resolved)})"
    return {"versions": versions, "device": name, "platform": platform.platform()}


def prefetched(prepare: Callable[[Any], Any], chunks: Sequence) -> Iterator[tuple[Any, Any]]:
    """``(chunk, prepare(chunk))`` for each chunk in order, preparing the next chunk in a
    background thread while the caller works on the current one.

    Decoding and resizing images (Pillow) and the network (ONNX Runtime, PyTorch) release the GIL,
    so reading batch ``k + 1`` overlaps running batch ``k``. An error of ``prepare`` is raised
    when its chunk is reached; nothing is prepared beyond one chunk ahead.
    """
    if len(chunks) < 2:
        for chunk in chunks:
            yield chunk, prepare(chunk)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="sigclass-prefetch") as pool:
        ahead = pool.submit(prepare, chunks[0])
        try:
            for index, chunk in enumerate(chunks):
                ready = ahead.result()
                if index + 1 < len(chunks):
                    ahead = pool.submit(prepare, chunks[index + 1])
                yield chunk, ready
        finally:
            ahead.cancel()
