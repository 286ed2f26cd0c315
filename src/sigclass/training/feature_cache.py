"""Feature vectors on disk, keyed by content, so a second headless run does not compute them again.

The image featurizer keys each view of each file by the hash of its bytes inside a folder named
after the network, its weights and its preprocessing; an interrupted run keeps what it computed.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import numpy as np

from .._utils import atomic_write

logger = logging.getLogger(__name__)


class FeatureCache:
    """Vectors on disk, keyed by content hash, in append-only safetensors shards.

    Each shard holds a ``(n, d)`` matrix and the list of its keys; shards are written atomically,
    so a crash loses at most the shard being written.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._vectors: dict[str, np.ndarray] | None = None

    def _load(self) -> dict[str, np.ndarray]:
        if self._vectors is None:
            from safetensors import safe_open
            from safetensors.numpy import load_file

            self._vectors = {}
            for shard in sorted(self.folder.glob("shard-*.safetensors")):
                try:
                    with safe_open(str(shard), framework="numpy") as handle:
                        keys = json.loads(handle.metadata()["keys"])
                    matrix = load_file(str(shard))["features"]
                except Exception as exc:  # noqa: BLE001 - a damaged shard is recomputed
                    logger.warning("Ignoring damaged feature cache shard %s: %s", shard, exc)
                    continue
                self._vectors.update(zip(keys, matrix, strict=True))
        return self._vectors

    def get(self, keys: list[str]) -> dict[str, np.ndarray]:
        vectors = self._load()
        return {k: vectors[k] for k in keys if k in vectors}

    def put(self, keys: list[str], matrix: np.ndarray) -> None:
        if not keys:
            return
        from safetensors.numpy import save_file

        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        shard = self.folder / f"shard-{uuid.uuid4().hex}.safetensors"
        atomic_write(shard, lambda p: save_file({"features": matrix}, str(p),
                                                metadata={"keys": json.dumps(keys)}))
        self._load().update(zip(keys, matrix, strict=True))

    def __len__(self) -> int:
        return len(self._load())
