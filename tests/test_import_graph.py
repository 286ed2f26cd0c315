"""The package imports only downward: no import circle, no lower layer importing a higher one.

Every ``import`` statement of every module under ``src/sigclass`` counts, at module level or
inside a function: a function-level import of a sigclass module is an edge of the graph like any
other, so no circle can hide behind one. Third-party libraries are not part of the graph; the
only ones imported inside functions are the heavy or optional ones of :data:`LAZY_LIBRARIES`, so
that ``import sigclass`` and ``sigclass --help`` load none of them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sigclass"

# The layers, lowest first. A module belongs to the layer of the longest prefix that names it;
# it may import its own layer (without a circle) and the layers below, never one above.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("sigclass", "sigclass._utils", "sigclass.exceptions", "sigclass.choices")),
    ("data and networks", ("sigclass.data", "sigclass.models", "sigclass.config")),
    ("training, inference, evaluation, explanations and the modalities",
     ("sigclass.training", "sigclass.inference", "sigclass.evaluation", "sigclass.explain",
      "sigclass.modalities")),
    ("trained models: predictor, artifacts and their schema, tracking store and registry, loading, "
     "the lean serving runtime",
     ("sigclass.predictor", "sigclass.artifacts", "sigclass.model_schema", "sigclass.ensemble",
      "sigclass.runtime", "sigclass.tracking", "sigclass.loading", "sigclass.detector",
      "sigclass.detector_engine")),
    ("workflows", ("sigclass.workflows", "sigclass.audit")),
    ("front ends", ("sigclass.serve", "sigclass.cli", "sigclass.__main__")),
)

# Imported inside the functions that use them: heavy to import, or optional extras.
LAZY_LIBRARIES = frozenset({
    "torch", "torchvision", "timm", "huggingface_hub", "safetensors",  # PyTorch and weights: ~2 s
    "sklearn", "scipy", "skimage", "skops", "cleanlab", "imagehash",  # ~1 s together
    "aeon",  # numba kernels, ~3 s
    "onnxruntime", "onnxscript", "onnx",  # the CPU inference engine
    "pyspark",  # the spark extra (and a JVM)
    "pandas", "pyarrow", "matplotlib", "PIL", "tqdm", "yaml",  # tables, plots, images, files
    "mlflow", "optuna", "sqlalchemy", "filelock",  # tracking and tuning extras
    "fastapi", "starlette", "uvicorn",  # the service extra
    "elpv_dataset",  # the demo extra
    "fcntl",  # POSIX only
    "pycocotools",  # detection metrics
})


def layer_of(module: str) -> int:
    best, found = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or (prefix != "sigclass" and module.startswith(prefix + "."))
            if inside and len(prefix) > best:
                best, found = len(prefix), index
    assert found is not None, f"{module} is in no layer; add it to LAYERS"
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """``(imported name, line, inside a function)`` of every import statement of a module."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                target = _absolute(module, path, child)
                found.append((target, child.lineno, in_function))
                found.extend((f"{target}.{a.name}", child.lineno, in_function)
                             for a in child.names if f"{target}.{a.name}" in known)
            visit(child, nested)

    visit(tree, False)
    return found


def graph() -> tuple[dict[str, set[str]], list[str]]:
    """Edges between sigclass modules, and the function-level imports that are not allowed."""
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    lazy_problems = []
    for name, path in known.items():
        for target, line, in_function in imports(name, path, set(known)):
            if target == "sigclass" or target.startswith("sigclass."):
                parts = target.split(".")
                # importing a.b.c runs the packages a.b and a first, unless this module is in them
                for end in range(2, len(parts) + 1):
                    prefix = ".".join(parts[:end])
                    if prefix in known and prefix != name and not name.startswith(prefix + "."):
                        edges[name].add(prefix)
            elif in_function and target.split(".")[0] not in LAZY_LIBRARIES:
                lazy_problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports "
                                     f"{target} inside a function; import it at the top")
    return edges, lazy_problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in edges[node]:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_module_is_in_a_layer():
    for name in modules():
        layer_of(name)


def test_no_import_circle():
    circles = cycles(graph()[0])
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_layers_import_only_downward():
    upward = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
              for a, targets in sorted(graph()[0].items()) for b in sorted(targets)
              if layer_of(b) > layer_of(a)]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_only_heavy_libraries_are_imported_inside_functions():
    problems = graph()[1]
    assert not problems, "\n".join(problems)


def test_the_checks_catch_a_circle_and_an_upward_import():
    edges = {"sigclass.data.a": {"sigclass.data.b"}, "sigclass.data.b": {"sigclass.data.a"},
             "sigclass.serve.x": set()}
    assert cycles(edges) == [["sigclass.data.a", "sigclass.data.b"]]
    assert layer_of("sigclass.data.a") < layer_of("sigclass.workflows.train") < layer_of("sigclass.serve.x")
    tree_edges = graph()[0]
    assert "sigclass.exceptions" in tree_edges["sigclass.data.split"]  # function imports count too


def test_import_sigclass_loads_no_heavy_library():
    code = ("import sys, sigclass, sigclass.cli; heavy = sorted(m for m in ('torch', 'sklearn', "
            "'mlflow', 'timm', 'aeon', 'onnxruntime', 'pandas') if m in sys.modules); print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_service_loads_models_and_never_imports_training():
    edges = graph()[0]
    service = {name: targets for name, targets in edges.items() if name.startswith("sigclass.serve")}
    training = sorted(f"{name} imports {target}" for name, targets in service.items()
                      for target in targets
                      if target.startswith(("sigclass.training", "sigclass.workflows")))
    assert not training, "\n".join(training)
    assert "sigclass.loading" in edges["sigclass.serve.model"]
