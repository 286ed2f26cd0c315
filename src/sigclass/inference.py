"""Inference engines: run a network on batches with PyTorch or ONNX Runtime.

The backend is decided in one place, :func:`resolve_backend` (``"auto"``: PyTorch on CUDA, ONNX
Runtime on a CPU where it is installed and the network can be exported), and the engine it
gives is used by the featurizers, the predictor, batch scoring and the service alike.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ._utils import atomic_write, resolve_device
from .choices import BACKENDS, check_choice
from .data.views import TTA_GROUPS, apply_view, resolve_tta
from .exceptions import ConfigError

logger = logging.getLogger(__name__)

OPSET = 17  # ONNX opset of exported graphs (ONNX Runtime's quantization handles it)
# Part of every cached graph's key: bump when export_onnx writes graphs differently, so that a
# cache does not keep serving graphs of the earlier kind (2: torch.export's exporter again).
GRAPH_VERSION = 2


class TorchEngine:
    """Runs ``network`` under ``torch.inference_mode`` (bf16 autocast on CUDA, channels_last)."""

    name = "torch"

    def __init__(self, network, device=None):
        import torch

        self.device = resolve_device(device)
        self.channels_last = True
        self.network = network.eval().to(self.device)
        if self.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)

    def __call__(self, batch) -> np.ndarray:
        import torch

        x = torch.as_tensor(batch).to(self.device, non_blocking=True)
        if x.ndim == 4 and self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
        ):
            out = self.network(x)
        return out.float().cpu().numpy()


class OnnxEngine:
    """Runs an exported ONNX graph with ONNX Runtime on the CPU."""

    name = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Threads that spin while waiting stall on a shared CPU (3x slower on 2 busy cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch) -> np.ndarray:
        array = batch.numpy() if hasattr(batch, "numpy") else np.asarray(batch)
        return self.session.run(None, {self.input_name: np.ascontiguousarray(array, dtype=np.float32)})[0]


def infer(engine, batch, views: tuple[str, ...] | bool = ("id",)) -> np.ndarray:
    """Outputs of ``engine`` on ``batch``, averaged over the test-time ``views`` (see
    :mod:`sigclass.data.views`; ``True`` is the image and its mirror)."""
    if isinstance(views, bool):
        views = TTA_GROUPS[resolve_tta(views)]
    views = tuple(views) or ("id",)
    out = None
    for view in views:
        result = engine(batch if view == "id" else _contiguous(apply_view(batch, view)))
        out = result if out is None else out + result
    return out / float(len(views)) if len(views) > 1 else out


def pooled_features(network, batch) -> np.ndarray:
    """The pooled feature vectors of a classifier ``network`` on a preprocessed ``batch`` (the
    input of its last linear layer: ``forward_head(forward_features(x), pre_logits=True)`` of the
    backbone/head contract), run with PyTorch wherever the network's weights are."""
    import torch

    parameter = next(network.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    x = torch.as_tensor(batch).to(device)
    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode():
            out = network.forward_head(network.forward_features(x), pre_logits=True)
    finally:
        network.train(was_training)
    return out.float().reshape(len(out), -1).cpu().numpy()


def _contiguous(batch):
    return batch.contiguous() if hasattr(batch, "contiguous") else np.ascontiguousarray(batch)


def export_onnx(network, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """Export ``network`` (eval mode, float32, CPU) to ONNX with a dynamic batch axis.

    torch.onnx's ``torch.export``-based exporter writes the graph; a network it cannot export
    falls back to the TorchScript exporter, and the log says so. The TorchScript exporter is
    faster (about 2 s for EfficientNet-Lite2, against 11-13 s) but traces the TF-style "same"
    padding of the EfficientNet-Lite networks as shape arithmetic and a computed ``Pad`` before
    each strided convolution, which ONNX Runtime cannot fold: its graph ran 1.6-1.8x slower for
    Lite0 and 1.3-1.4x slower for Lite2, at batch 1 and 32. The export is paid once per network
    (graphs are cached by checksum), the speed on every image. Every output (a tuple's too) has
    the dynamic batch axis; the first is named ``output``.

    Args:
        network: The module to export; its ``forward`` output(s) are the graph's outputs.
        input_shape: Shape of one item, without the batch axis.
        path: Destination ``.onnx`` file, written atomically.
    """
    import torch

    network = network.eval().float().cpu()
    example = torch.randn(2, *input_shape)
    with torch.no_grad():
        out = network(example)
    n_outputs = len(out) if isinstance(out, tuple | list) else 1
    names = ["output"] + [f"output_{i}" for i in range(1, n_outputs)]

    def write(tmp: Path) -> None:
        for name in ("onnx_ir", "onnxscript", "torch.onnx"):  # the exporters are chatty
            logging.getLogger(name).setLevel(logging.ERROR)
        # the TorchScript exporter's deprecation and tracer warnings
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                batch = torch.export.Dim("batch", min=1, max=4096)
                program = torch.onnx.export(network, (example,), dynamo=True,
                                            dynamic_shapes=({0: batch},), input_names=["input"],
                                            output_names=names, verbose=False)
                program.save(str(tmp))
            except Exception as exc:  # noqa: BLE001 - torch.export raises many kinds of errors
                logger.info("torch.export's ONNX exporter failed (%s); using the TorchScript one",
                            " ".join(str(exc).split())[:200])
                torch.onnx.export(network, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                                  input_names=["input"], output_names=names,
                                  dynamic_axes={name: {0: "batch"} for name in ["input", *names]},
                                  do_constant_folding=True)

    return atomic_write(Path(path), write)


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device=None, network=None) -> str:
    """The backend policy: ``"torch"`` or ``"onnx"`` for ``backend`` on ``device``.

    ``"torch"`` and ``"onnx"`` are taken as asked (``"onnx"`` for a network with
    ``onnx_exportable = False``, such as MiniRocket running aeon's numba code, is an error);
    ``"auto"`` is PyTorch on CUDA, where ONNX Runtime is not installed or for a network that
    cannot be exported, and ONNX Runtime otherwise.
    """
    check_choice("backend", backend, BACKENDS)
    exportable = getattr(network, "onnx_exportable", True)
    if backend == "onnx" and not exportable:
        name = getattr(network, "model_spec", {}).get("name", type(network).__name__)
        raise ConfigError(f"'{name}' cannot be exported to ONNX; use backend 'torch' or 'auto'.")
    if backend != "auto":
        return backend
    if resolve_device(device).type == "cuda" or not onnx_available() or not exportable:
        return "torch"
    return "onnx"


def make_engine(network, input_shape, backend: str = "auto", device=None, onnx_path: str | Path | None = None):
    """An engine for ``network`` on the backend :func:`resolve_backend` picks; the ONNX graph is
    exported to ``onnx_path`` once and reused (a temporary folder when ``None``)."""
    if resolve_backend(backend, device, network) == "torch":
        return TorchEngine(network, device)
    if onnx_path is None:
        onnx_path = Path(tempfile.mkdtemp(prefix="sigclass-onnx-")) / "model.onnx"
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        logger.info("Exporting the network to ONNX (%s), once", onnx_path)
        export_onnx(network, tuple(input_shape), onnx_path)
    return OnnxEngine(onnx_path)
