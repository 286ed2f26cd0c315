"""Which MLflow store to use, and whether it can be reached, decided before any training starts.

Resolution order of the tracking URI: the ``tracking.uri`` option (``--tracking-uri``), then the
``MLFLOW_TRACKING_URI`` variable, then the local default store: ``mlflow.db`` (SQLite) and
``mlartifacts/`` in the folder named by ``SIGCLASS_TRACKING_DIR``, else the working folder.
``SIGCLASS_TRACKING=off`` turns tracking off by default (``--no-track`` does it per command).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..exceptions import TrackingError

DB_NAME = "mlflow.db"
ARTIFACTS_NAME = "mlartifacts"
DEFAULT_EXPERIMENT = "sigclass"
_OFF = ("0", "off", "false", "no")


@dataclass(frozen=True)
class TrackingSettings:
    """A resolved tracking target.

    Attributes:
        enabled: Whether runs are recorded at all.
        uri: The MLflow tracking (and registry) URI.
        experiment: Experiment name of new runs.
        artifact_root: Folder (URI) under which new experiments keep their artifacts; ``None``
            leaves it to the store (a tracking server picks its own).
    """

    enabled: bool
    uri: str
    experiment: str = DEFAULT_EXPERIMENT
    artifact_root: str | None = None


def default_store_dir() -> Path:
    """The folder of the default store: ``$SIGCLASS_TRACKING_DIR`` or the working folder."""
    return Path(os.environ.get("SIGCLASS_TRACKING_DIR") or Path.cwd()).expanduser().resolve()


def default_uri() -> str:
    """``sqlite:///<folder>/mlflow.db`` of the default store."""
    return f"sqlite:///{(default_store_dir() / DB_NAME).as_posix()}"


def resolve_uri(uri: str | None = None) -> str:
    """The tracking URI: ``uri``, else ``MLFLOW_TRACKING_URI``, else the default store.

    A plain path ending in ``.db`` is read as a SQLite file; any other plain path as a folder
    holding ``mlflow.db``.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri()
    if "://" not in uri and not uri.startswith(("databricks", "azureml")):
        path = Path(uri).expanduser().resolve()
        path = path if path.suffix == ".db" else path / DB_NAME
        uri = f"sqlite:///{path.as_posix()}"
    return uri


def resolve_settings(tracking: Any = None, data: str | None = None) -> TrackingSettings:
    """Settings from a :class:`~sigclass.config.TrackingConfig` (or ``None``) and the data name."""
    enabled = bool(getattr(tracking, "enabled", True))
    if os.environ.get("SIGCLASS_TRACKING", "").strip().lower() in _OFF:
        enabled = False
    if os.environ.get("RANK", "0") != "0":  # distributed training: the first process records
        enabled = False
    uri = resolve_uri(getattr(tracking, "uri", None))
    experiment = getattr(tracking, "experiment", None) or experiment_name(data)
    return TrackingSettings(enabled, uri, experiment, artifact_root_for(uri))


def experiment_name(data: str | None) -> str:
    """A default experiment per data source: ``fridgeObjects``, ``aeon-GunPoint``."""
    if not data:
        return DEFAULT_EXPERIMENT
    text = str(data).rstrip("/\\")
    if ":" in text and not Path(text).exists():
        text = text.replace(":", "-")
    else:
        path = Path(text)
        text = path.stem if path.suffix else path.name
    return re.sub(r"[^\w.\-]+", "_", text) or DEFAULT_EXPERIMENT


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else ``None``."""
    if not uri.startswith("sqlite:"):
        return None
    rest = re.sub(r"^sqlite:/*", "/", uri).split("?", 1)[0]
    if re.match(r"^/[A-Za-z]:", rest):  # sqlite:///C:/folder/mlflow.db on Windows
        rest = rest[1:]
    return Path(rest)


def artifact_root_for(uri: str) -> str | None:
    """``mlartifacts/`` beside a SQLite file; ``None`` for servers, which choose themselves."""
    path = sqlite_path(uri)
    if path is None:
        return None
    return (path.parent / ARTIFACTS_NAME).as_uri()


def check_store(uri: str, timeout: float = 5.0) -> None:
    """Raise :class:`TrackingError` with the cause and the fix when ``uri`` cannot be used.

    SQLite: the folder must exist (it is created) and be writable, and an existing file must be a
    database. HTTP(S): the server must answer within ``timeout`` seconds. Other schemes
    (databricks, azureml, ...) are checked by asking the store for one experiment.
    """
    fix = "pass another --tracking-uri, or --no-track to train without recording the run"
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise TrackingError(
            "Recording runs needs MLflow, which is not installed. Install it with "
            "`pip install 'sigclass[all]'` (or `pip install mlflow==3.17.2`), or train with "
            "--no-track (SIGCLASS_TRACKING=off) to skip recording."
        ) from None
    db = sqlite_path(uri)
    if db is not None:
        _check_sqlite(uri, db, fix)
    elif uri.startswith(("http://", "https://")):
        _check_http(uri, timeout, fix)
    elif uri.startswith("file:") or "://" not in uri:
        raise TrackingError(f"Tracking URI '{uri}': MLflow file stores are deprecated; use a "
                            f"SQLite file ('sqlite:///path/mlflow.db') or a server, or {fix}.")
    else:
        _check_with_client(uri, fix)


def _check_sqlite(uri: str, db: Path, fix: str) -> None:
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(f"Tracking store '{uri}' cannot be created: folder '{db.parent}' "
                            f"({exc.strerror}); {fix}.") from None
    target = db if db.exists() else db.parent
    try:  # a real write: permissions, read-only mounts and full disks all show up here
        with tempfile.NamedTemporaryFile(dir=db.parent, prefix=".sigclass-write-test-"):
            pass
        writable = os.access(target, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        raise TrackingError(f"Tracking store '{uri}' is not writable: no write permission on "
                            f"'{target}'; {fix}.")
    if db.exists():
        try:
            with contextlib.closing(sqlite3.connect(db, timeout=30)) as connection:
                connection.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            raise TrackingError(f"Tracking store '{db}' is not an SQLite database ({exc}); "
                                f"{fix}.") from None


def _check_http(uri: str, timeout: float, fix: str) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) only
            response.read(64)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise TrackingError(f"Tracking server '{uri}' refused access (HTTP {exc.code}); set "
                                "MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD, "
                                f"or {fix}.") from None
        if exc.code >= 500:
            raise TrackingError(f"Tracking server '{uri}' fails (HTTP {exc.code} on /health); "
                                f"{fix}.") from None
        # Some proxies and workspaces have no /health route: any other answer means it is up.
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(f"Tracking server '{uri}' cannot be reached ({reason}). Start it, "
                            f"check the address, or {fix}.") from None


def _check_with_client(uri: str, fix: str) -> None:
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure means the store is unusable
        raise TrackingError(f"Tracking store '{uri}' cannot be used ({exc}); {fix}.") from None


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialize the creation of a SQLite store between processes (schema migrations race)."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: MLflow's own retries are all there is
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.parent / f".{db.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_CLIENTS: dict[str, Any] = {}


def get_client(uri: str):
    """An ``MlflowClient`` for tracking and registry on ``uri``, its store created once."""
    client = _CLIENTS.get(uri)
    if client is None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in logs
        from mlflow import MlflowClient

        with store_lock(uri):
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client._tracking_client.store  # noqa: B018 - creates the tables under the lock
            client._get_registry_client().store  # noqa: B018
        _CLIENTS[uri] = client
    return client


def get_experiment_id(client, name: str, artifact_root: str | None) -> str:
    """The id of experiment ``name``, created (with its artifact folder) when missing."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    folder = re.sub(r"[^\w.\-]+", "_", name)
    location = f"{artifact_root.rstrip('/')}/{folder}" if artifact_root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another process created it first
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id
