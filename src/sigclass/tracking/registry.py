"""The model registry: register a run's model, move aliases, list versions, load by name.

A version records the run's test metrics (tags ``test_*`` and the description) and its lineage
(tags ``run_id``, ``dataset_fingerprint``, ``split_fingerprint``, ``data``, ``mode``, ``model``).
``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` are downloaded once into the sigclass cache
(``$SIGCLASS_CACHE_DIR/registry``) and loaded with sigclass's checksum-verified loader.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .._utils import default_cache_dir, sha256_bytes
from ..exceptions import TrackingError
from .logger import TRACKING_FILE
from .record import log_run_folder
from .store import check_store, get_client, resolve_uri, sqlite_path

KEY_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr",
               "map", "map_50", "map_75")  # the last three: detection models (COCO mAP)
LINEAGE = ("dataset_fingerprint", "split_fingerprint", "data", "mode", "model", "run_dir", "task",
           "arch")
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w.\-]+))/?$")


def _client(uri: str | None):
    uri = resolve_uri(uri)
    check_store(uri)
    return get_client(uri), uri


def resolve_run(run: str | Path, uri: str | None = None) -> tuple[str, str]:
    """``(run_id, tracking_uri)`` of a run folder or an MLflow run id.

    A run folder names its MLflow run in ``tracking.json``; one trained with ``--no-track`` is
    recorded first (config, per-epoch history, metrics, files and model).
    """
    folder = Path(str(run)).expanduser()
    if folder.is_dir():
        try:
            saved = json.loads((folder / TRACKING_FILE).read_text())
        except (OSError, ValueError):  # trained with --no-track: record it now
            return log_run_folder(folder, uri), resolve_uri(uri)
        return saved["run_id"], uri or saved["tracking_uri"]
    if re.fullmatch(r"[0-9a-f]{32}", str(run)):
        return str(run), resolve_uri(uri)
    raise TrackingError(f"'{run}' is neither a run folder nor an MLflow run id (32 hex digits).")


def register_run(run: str | Path, name: str, uri: str | None = None,
                 artifact_path: str = "model"):
    """Register the model of a finished run as a new version of ``name``; returns the version."""
    from mlflow.exceptions import MlflowException

    run_id, uri = resolve_run(run, uri)
    client, uri = _client(uri)
    try:
        record = client.get_run(run_id)
    except MlflowException:
        raise TrackingError(f"MLflow run {run_id} is not in the store '{uri}'; pass the store "
                            "it was recorded in with --tracking-uri.") from None
    if record.data.tags.get("sigclass.model_artifact") != artifact_path:
        raise TrackingError(f"Run {run_id} ({record.info.run_name}) has no logged model: it did "
                            f"not finish (status {record.info.status}). Register a finished run.")
    metrics = record.data.metrics
    tags = {f"test_{k}": f"{metrics[f'test_{k}']:.6g}" for k in (*KEY_METRICS, "n")
            if f"test_{k}" in metrics}
    tags["run_id"] = run_id
    tags.update({k: record.data.tags[f"sigclass.{k}"] for k in LINEAGE
                 if f"sigclass.{k}" in record.data.tags})
    summary = ", ".join(f"{k} {metrics[f'test_{k}']:.4f}" for k in KEY_METRICS
                        if f"test_{k}" in metrics)
    description = (f"{tags.get('mode', '?')} {tags.get('model', '?')} on {tags.get('data', '?')}; "
                   f"test {summary}; run {run_id}")
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise TrackingError(f"Cannot create the registered model '{name}': {exc}") from None
    return client.create_model_version(name, f"{record.info.artifact_uri}/{artifact_path}",
                                       run_id=run_id, tags=tags, description=description)


def promote(name: str, version: int | str, alias: str, uri: str | None = None):
    """Point ``alias`` (e.g. ``champion``) at ``version`` of ``name``; returns that version."""
    from mlflow.exceptions import MlflowException

    client, uri = _client(uri)
    try:
        found = client.get_model_version(name, str(version))
    except MlflowException:
        raise TrackingError(f"Model '{name}' has no version {version} in '{uri}'; "
                            "see `sigclass models`.") from None
    try:
        client.set_registered_model_alias(name, alias, str(version))
    except MlflowException as exc:  # reserved or malformed alias names
        raise TrackingError(f"Cannot set alias {alias!r} on '{name}': {exc.message}") from None
    return found


def list_versions(name: str | None = None, uri: str | None = None) -> list[dict[str, Any]]:
    """Every version (of ``name``, or of all models): metrics, aliases, run, lineage."""
    client, _ = _client(uri)
    names = [name] if name else [m.name for m in client.search_registered_models()]
    rows = []
    for model_name in names:
        model = _registered(client, model_name)
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        for version in client.search_model_versions(f"name = '{model_name}'"):
            rows.append({"name": model_name, "version": int(version.version),
                         "aliases": sorted(aliases.get(str(version.version), [])),
                         "run_id": version.run_id, "created": version.creation_timestamp,
                         **{k: v for k, v in version.tags.items()}})
    return sorted(rows, key=lambda r: (r["name"], -r["version"]))


def _registered(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        raise TrackingError(f"No registered model named '{name}'; register one with "
                            "`sigclass register RUN --name NAME`, see `sigclass models`.") from None


def parse_model_uri(text: str) -> tuple[str, str | None, str | None]:
    """``(name, version, alias)`` of ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``."""
    match = _URI.match(text)
    if match is None:
        raise TrackingError(f"'{text}' is not a registry URI; use models:/NAME/VERSION or "
                            "models:/NAME@ALIAS (e.g. models:/fridge@champion).")
    return match["name"], match["version"], match["alias"]


def download_model(text: str, uri: str | None = None) -> Path:
    """Download a registered model (cached per version); returns its sigclass model folder."""
    from mlflow.exceptions import MlflowException

    name, version, alias = parse_model_uri(text)
    _check_store_exists(text, resolve_uri(uri))
    client, uri = _client(uri)
    try:
        found = (client.get_model_version_by_alias(name, alias) if alias
                 else client.get_model_version(name, version))
    except MlflowException:
        what = f"alias '{alias}'" if alias else f"version {version}"
        _registered(client, name)
        raise TrackingError(f"Model '{name}' has no {what} in '{uri}'; see `sigclass models {name}`"
                            " and `sigclass promote`.") from None
    target = _cache_dir(uri) / name / str(found.version)
    if not target.is_dir():
        _download(client, uri, name, found.version, target)
    return _model_folder(target, text)


def _check_store_exists(text: str, uri: str) -> None:
    """Refuse to look a model up in a SQLite store that does not exist: opening it would
    create an empty ``mlflow.db`` (in the working folder, by default) as a side effect."""
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise TrackingError(f"Cannot load '{text}': there is no model registry at '{uri}' (no "
                            f"file {db}). Set MLFLOW_TRACKING_URI (or SIGCLASS_TRACKING_DIR) to "
                            "the store the model was registered in, or pass a model folder.")


def _cache_dir(uri: str) -> Path:
    return default_cache_dir() / "registry" / sha256_bytes(uri.encode())[:16]


def _download(client, uri: str, name: str, version: str, target: Path) -> None:
    import mlflow.artifacts

    source = client.get_model_version_download_uri(name, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp), tracking_uri=uri)
        try:
            tmp.rename(target)  # atomic: a half download is never taken for a model
        except OSError:
            if not target.is_dir():  # not lost to another process downloading the same version
                raise
    except Exception as exc:
        raise TrackingError(f"Cannot download models:/{name}/{version} from '{source}': {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _model_folder(target: Path, text: str) -> Path:
    found = sorted(target.rglob("model.json"), key=lambda p: len(p.parts))
    if not found:
        raise TrackingError(f"'{text}' holds no sigclass model (no model.json in {target}); "
                            "it was not logged by sigclass.")
    return found[0].parent


def registered_names(run: str | Path) -> list[str]:
    """The registered models that hold a version of a run folder's model: none for a run never
    recorded in MLflow (``--no-track``) or never registered."""
    try:
        saved = json.loads((Path(run) / TRACKING_FILE).read_text())
    except (OSError, ValueError):
        return []
    client, _ = _client(saved.get("tracking_uri"))
    versions = client.search_model_versions(f"run_id='{saved['run_id']}'")
    return sorted({version.name for version in versions})
