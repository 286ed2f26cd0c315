"""Distributed data-parallel training under ``torchrun``.

``torchrun --nproc_per_node=N -m sigclass train DATA ...`` starts N processes that each see the
environment variables ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``. :func:`init_from_env` joins them into one process group (NCCL on GPUs, gloo on
CPUs); the :class:`~sigclass.training.trainer.Trainer` then wraps the network in
``DistributedDataParallel`` and shards each epoch with a ``DistributedSampler``. Only the first
process (rank 0) writes the run folder, checkpoints and tracking records; every process computes
the same validation metrics, so early stopping and the best epoch agree without messages.

Nothing here imports ``torch.distributed`` until it is used, and a single process (no
``WORLD_SIZE`` or ``WORLD_SIZE=1``) never touches it.
"""

from __future__ import annotations

import atexit
import gc
import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from ..exceptions import ConfigError

logger = logging.getLogger(__name__)


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by ``torchrun`` (1 when unset)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(
            f"The WORLD_SIZE environment variable must be an integer. Got {os.environ['WORLD_SIZE']!r}."
        ) from None


def is_initialized() -> bool:
    """Whether this process is part of an initialized process group."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes in the group (1 outside distributed training)."""
    if env_world_size() <= 1 or not is_initialized():
        return 1
    import torch.distributed as dist

    return dist.get_world_size()


def rank() -> int:
    """This process's rank (0 outside distributed training)."""
    if env_world_size() <= 1 or not is_initialized():
        return int(os.environ.get("RANK", "0"))
    import torch.distributed as dist

    return dist.get_rank()


def is_main_process() -> bool:
    """True for the process that writes files and logs (rank 0, or the only process)."""
    return rank() == 0


def backend_for(device: str | None) -> str:
    """``nccl`` when the run trains on CUDA, else ``gloo``."""
    import torch

    wants_cuda = device in (None, "auto") and torch.cuda.is_available() or str(device).startswith("cuda")
    return "nccl" if wants_cuda else "gloo"


def init_from_env(device: str | None = "auto", timeout_minutes: float = 30.0) -> bool:
    """Join the process group described by ``torchrun``'s environment variables.

    Returns ``True`` when this call created the group (the caller then ends it with
    :func:`shutdown`), ``False`` for a single process or a group that already exists.
    """
    if env_world_size() <= 1:
        return False
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 asks for distributed training, but this PyTorch build "
                          "has no torch.distributed; run one process or install a full PyTorch.")
    if dist.is_initialized():
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} asks for distributed training but "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set; start the "
            "processes with torchrun (e.g. `torchrun --nproc_per_node=2 -m sigclass train ...`)."
        )
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    atexit.register(_destroy)  # the group lives as long as the process (torchrun starts one run)
    logger.info("Distributed training: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return True


def local_rank() -> int:
    """``LOCAL_RANK``: the process's index on its machine (its GPU)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def shutdown(wait: bool = True) -> None:
    """Leave and destroy the process group; with ``wait``, once every process has got here."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        gc.collect()  # DDP reducers still referring to the group go first
        dist.destroy_process_group()


@contextmanager
def process_group(device: str | None = "auto") -> Iterator[bool]:
    """Join ``torchrun``'s group for the duration of one run (a no-op for a single process).

    On the way out every process waits for the others before the group is destroyed: a process
    that finished its part early (a follower while rank 0 evaluates and saves) must not tear
    down its gloo connections under a peer that still uses them, which aborts the process
    ("terminate called without an active exception"). After an error the group is destroyed
    without waiting, since the other processes may never arrive.
    """
    created = init_from_env(device)
    try:
        yield created
    except BaseException:
        if created:
            shutdown(wait=False)
        raise
    if created:
        shutdown(wait=True)


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op for a single process)."""
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` on every process (the value itself for a single process)."""
    if world_size() <= 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(value: Any) -> list[Any]:
    """Every process's ``value``, in rank order (``[value]`` for a single process)."""
    if world_size() <= 1:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is true on any of them."""
    return any(all_gather_objects(bool(flag)))


def parameter_digest(network) -> str:
    """SHA-256 of ``network``'s parameters (names and exact values): equal on every process of a
    distributed run whose gradients were all-reduced."""
    digest = hashlib.sha256()
    for name, param in network.named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
