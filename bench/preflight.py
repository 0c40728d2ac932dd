"""Checks that run before anything starts: a bad run fails in seconds, with one line.

Ray-free (it imports neither Ray nor MLflow): everything here looks at the config, the local
machine, the network and the file system, so that a mistake that would otherwise surface inside
every trial (an unknown model option, ``training.device: cuda`` without a GPU), as a hang (a trial
no node can ever place) or after minutes of retries (an MLflow server nobody runs) is refused
before Ray starts. Every check raises :class:`PreflightError`, whose message is one printable
line; the CLI turns it into exit status 2.

:func:`check_before_start` runs every check that needs no Ray runtime. With ``--address`` the
workers' hardware is not this machine's: :func:`check_placeable` then takes the cluster's
per-node resources (``ray.nodes()``), once Ray is connected.
"""

from __future__ import annotations

import inspect
import os
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import BenchmarkConfig, TrainingConfig
from bench.errors import first_line, unknown_name
from bench.naming import name_limit, too_long_name

#: Seconds a network check waits for an answer: the MLflow client and Ray retry for minutes.
NETWORK_TIMEOUT_S = 3.0

#: The regularizer that adds λ·w to the gradient: the same L2 penalty as ``training.weight_decay``.
L2_REGULARIZER = "weight_decay"

#: URI schemes MLflow's built-in tracking stores accept (mlflow/tracking/_tracking_service/utils.py
#: registers these); plug-in stores declare theirs under the ``mlflow.tracking_store`` entry point.
_MLFLOW_SCHEMES = frozenset(
    {"", "file", "http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc"}
)

#: Input shape and classes the model is built with for the option check. A model's layers do not
#: depend on them (they only size the first and last layer), and the check builds on the meta
#: device, so no dataset needs to be loaded.
_PROBE_INPUT_SHAPE = (3, 32, 32)
_PROBE_CLASSES = 10


class PreflightError(ValueError):
    """A run that cannot work; the message is one printable line."""


@dataclass(frozen=True)
class NodeResources:
    """What one Ray node offers: logical CPUs and GPUs (Ray's ``CPU`` and ``GPU`` resources)."""

    cpus: float
    gpus: float


def check_before_start(
    config: BenchmarkConfig,
    results: Path,
    *,
    address: str | None,
    tracking_uri: str | None,
    num_cpus: int | None,
    optuna_storage: str | None = None,
) -> None:
    """Every check that needs no Ray runtime, cheapest first; raises :class:`PreflightError`.

    ``tracking_uri`` is the ``--tracking-uri`` option (``None``: the config's, else the default
    store under ``results``). Without ``address`` the trials run here, so devices and resources
    are checked against this machine; with it, call :func:`check_placeable` after connecting.
    Writes nothing: the results folder is probed with a file (or folder) that is removed again.
    """
    check_recipe(config)
    check_model_options(config)
    if address is not None:
        check_ray_address(address)
    else:
        check_device(config.training, cuda_available=_cuda_available())
        check_placeable(config, [local_node(num_cpus)], where="this machine")
    check_results_folder(results)
    check_names(config, results)
    if tracking_uri is not None and not tracking_uri.strip():
        raise PreflightError("--tracking-uri is empty: name a store (default: sqlite under the results folder)")
    uri = tracking_uri or config.tracking_uri
    if uri is not None:
        check_tracking_uri(uri, results=results)
    storage = optuna_storage or config.optuna_storage
    if storage is not None:
        check_optuna_storage(storage, results=results)


# --- the config against itself and the registries ---------------------------------------------


def check_names(config: BenchmarkConfig, results: Path) -> None:
    """Method names (a plug-in's may be any string) print on one line, and every file or folder
    name built from the benchmark and method names fits the file system of ``results`` (255 bytes
    a name on ext4), checked before anything is written: a name over it failed only once rows,
    Tune state or the report were being written."""
    for entry in config.regularizers:
        if any(ord(c) < 32 or ord(c) == 127 for c in entry.name):
            raise PreflightError(
                f"regularizer name {entry.name!r} holds a control character: it cannot be printed "
                "on one line or used in file names; register the plug-in under another name"
            )
    message = too_long_name(config.benchmark, [entry.name for entry in config.regularizers], results)
    if message is not None:
        raise PreflightError(message)


def check_recipe(config: BenchmarkConfig) -> None:
    """Refuse a recipe that applies the same thing twice: ``training.weight_decay`` (coupled L2 in
    SGD) together with the ``weight_decay`` regularizer (λ·w added to the gradient) would apply
    both λs in every step while the leaderboard shows only the regularizer's."""
    methods = {entry.name for entry in config.regularizers}
    if L2_REGULARIZER not in methods:
        return
    if config.training.weight_decay > 0 or "weight_decay" in config.search.space:
        what = (
            "searched in search.space" if "weight_decay" in config.search.space else f"{config.training.weight_decay:g}"
        )
        raise PreflightError(
            f"training.weight_decay ({what}) and the {L2_REGULARIZER!r} regularizer both apply an L2 penalty, "
            f"and every {L2_REGULARIZER} trial would apply their sum; set training.weight_decay: 0 "
            f"(and drop it from search.space) to compare L2 as a method, or remove {L2_REGULARIZER!r} from regularizers"
        )


def check_model_options(config: BenchmarkConfig) -> None:
    """``model.options`` against the model factory's signature (did-you-mean for an unknown
    name), then the model built on the meta device (no memory, no data) so that a bad value
    (``hidden: -4``, a string for a width) fails here rather than in every trial."""
    import torch

    from bench.models import ModelError, create_model, model_factory

    name = config.model.name
    options = config.model.options
    accepted = [p for p in inspect.signature(model_factory(name)).parameters if p not in ("input_shape", "num_classes")]
    for key in options:
        if key not in accepted:
            raise PreflightError(f"model.options: {unknown_name(f'option of model {name!r}', key, accepted)}")
    try:
        with torch.device("meta"):
            create_model(name, _PROBE_INPUT_SHAPE, _PROBE_CLASSES, **options)
    except (ModelError, TypeError, ValueError, RuntimeError) as error:
        raise PreflightError(
            f"model.options {_options_text(options)} do not build model {name!r}: {first_line(error)}"
        ) from None


def _options_text(options: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{key}: {value!r}" for key, value in options.items()) + "}"


# --- devices and resources ------------------------------------------------------------------------


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def check_device(training: TrainingConfig, *, cuda_available: bool) -> None:
    """``training.device: cuda`` on a machine without a CUDA device (a local run)."""
    if training.device == "cuda" and not cuda_available:
        raise PreflightError(
            "training.device is 'cuda' but this machine has no CUDA device; "
            "use device: auto or cpu, or --address a cluster with GPUs"
        )


def local_node(num_cpus: int | None) -> NodeResources:
    """What a local Ray runtime started here offers: ``--num-cpus`` or the CPUs Ray detects
    (the affinity mask and a cgroup CPU quota, as ``ray._private.utils.get_num_cpus`` counts
    them), and the visible CUDA devices."""
    import torch

    cpus = num_cpus if num_cpus is not None else _detected_cpus()
    return NodeResources(cpus=float(cpus), gpus=float(torch.cuda.device_count()))


def _detected_cpus() -> int:
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:  # cgroup v2: "max 100000" (no limit) or "<quota> <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 CPU limit readable: the affinity count stands
    return count


def check_placeable(config: BenchmarkConfig, nodes: list[NodeResources], *, where: str = "the cluster") -> None:
    """A trial needs ``cpus_per_trial`` CPUs and ``gpus_per_trial`` GPUs on one node; a request
    no node can ever meet is an error, not a trial that waits forever. Above 1, a GPU request
    must be whole: Ray packs fractions of one GPU, never parts of several."""
    resources = config.resources
    gpus = resources.gpus_per_trial
    if gpus > 1 and not float(gpus).is_integer():
        raise PreflightError(
            f"resources.gpus_per_trial is {gpus:g}: above 1 it must be a whole number "
            "(fractions pack several trials on one GPU)"
        )
    most_cpus = max((node.cpus for node in nodes), default=0.0)
    most_gpus = max((node.gpus for node in nodes), default=0.0)
    if config.training.device == "cuda" and most_gpus == 0 and where == "the cluster":
        raise PreflightError("training.device is 'cuda' but no node of the cluster has a GPU")
    if not any(node.cpus >= resources.cpus_per_trial and node.gpus >= gpus for node in nodes):
        cpus_short = resources.cpus_per_trial > most_cpus
        if cpus_short:
            need, have = f"resources.cpus_per_trial is {resources.cpus_per_trial:g}", _count(most_cpus, "CPU")
        else:
            need, have = f"resources.gpus_per_trial is {gpus:g}", _count(most_gpus, "GPU")
        # --num-cpus sizes the local runtime's CPUs only; GPUs are what the machine has.
        hint = " (see --num-cpus)" if where == "this machine" and cpus_short else ""
        raise PreflightError(f"{need} but {where} has at most {have} on one node{hint}: no trial could ever start")
    workers = resources.workers_per_trial
    if workers > 1 and where == "this machine":  # a cluster's autoscaler may add nodes: no total there
        held = sum(
            min(int(n.cpus // resources.cpus_per_trial), int(n.gpus // gpus) if gpus > 0 else workers) for n in nodes
        )
        if held < workers:
            raise PreflightError(
                f"resources.workers_per_trial is {workers} but {where} holds {held} such worker(s) "
                f"({resources.cpus_per_trial:g} CPU, {gpus:g} GPU each){' (see --num-cpus)' if gpus == 0 else ''}: "
                "no trial could ever start"
            )


def _count(value: float, unit: str) -> str:
    return f"{value:g} {unit}{'' if value == 1 else 's'}"


# --- places: the results folder, the tracking store, the cluster ----------------------------------


def check_results_folder(results: Path) -> None:
    """The results folder exists and takes files, or can be created: probed with a temporary file
    (or folder) that is removed again, so a bad path fails before any work, and nothing is left."""
    if any(ord(c) < 32 or ord(c) == 127 for c in str(results)):
        raise PreflightError(
            f"results folder {str(results)!r} holds a control character (a newline?): name another folder"
        )
    path = Path(os.path.abspath(results.expanduser()))
    limit = name_limit(path)
    for part in path.parts:
        if len(part.encode()) > limit:
            shown = part if len(part) <= 40 else part[:37] + "..."
            raise PreflightError(
                f"cannot create results folder {shown!r}: File name too long ({len(part.encode())} bytes; "
                f"the file system allows {limit} bytes per name)"
            )
    if path.exists() and not path.is_dir():
        raise PreflightError(f"results folder {path} is a file, not a folder")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise PreflightError(f"cannot create results folder {path}: {ancestor} is a file, not a folder")
    try:
        if ancestor == path:
            handle, probe = tempfile.mkstemp(prefix=".sharpbench-probe-", dir=path)
            os.close(handle)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".sharpbench-probe-", dir=ancestor))
    except OSError as error:
        verb = "write into" if ancestor == path else "create"
        raise PreflightError(f"cannot {verb} results folder {path}: {error.strerror or error}") from None


def check_tracking_uri(uri: str, *, results: Path | None = None) -> None:
    """A scheme MLflow can store to, an SQLite file that can be one (:func:`check_sqlite_file`),
    and an HTTP(S) server that answers within :data:`NETWORK_TIMEOUT_S` (MLflow's client
    retries a dead server for minutes)."""
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if (
        scheme not in _MLFLOW_SCHEMES
        and scheme.split("+")[0] not in _MLFLOW_SCHEMES
        and scheme not in _plugin_schemes()
    ):
        known = sorted(s for s in _MLFLOW_SCHEMES | _plugin_schemes() if s)
        raise PreflightError(
            f"cannot use MLflow tracking URI {uri}: scheme {scheme!r} is not a tracking store; "
            f"valid: {', '.join(known)}"
        )
    if scheme == "sqlite":
        check_sqlite_file(f"MLflow tracking URI {uri}", uri, results=results)
    if scheme.split("+")[0] in ("postgresql", "mysql", "mssql"):
        _check_driver(f"MLflow tracking URI {uri}", uri)
    if scheme in ("", "file"):
        from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE

        if not MLFLOW_ALLOW_FILE_STORE.get():  # MLflow 3 raises its own paragraph-long error later
            folder = urllib.parse.urlsplit(uri).path.rstrip("/") or "."
            raise PreflightError(
                f"cannot use MLflow tracking URI {uri}: MLflow 3 refuses a folder as its store (its file store) unless "
                f"MLFLOW_ALLOW_FILE_STORE=true is set; use a database, e.g. sqlite:///{folder}.db"
            )
    if scheme not in ("http", "https"):
        return
    if not urllib.parse.urlsplit(uri).hostname:
        raise PreflightError(f"cannot use MLflow tracking URI {uri}: no host (e.g. http://127.0.0.1:5000)")
    health = uri.rstrip("/") + "/health"  # MLflow's server answers "OK" there
    try:
        with urllib.request.urlopen(health, timeout=NETWORK_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        return  # something answered (a proxy, an older server): MLflow's own check decides
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        text = getattr(reason, "strerror", None) or str(reason)
        raise PreflightError(
            f"no MLflow tracking server answers at {uri} within {NETWORK_TIMEOUT_S:g} s: {text}"
        ) from None


def _check_driver(what: str, url: str) -> None:
    """The database driver of a SQLAlchemy URL is installed (the module itself, e.g. psycopg)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import NoSuchModuleError

    try:
        make_url(url).get_dialect().import_dbapi()
    except (NoSuchModuleError, ImportError) as error:
        raise PreflightError(f"cannot use {what}: {first_line(error)}") from None


def check_optuna_storage(url: str, *, results: Path | None = None) -> None:
    """An Optuna journal file that can be one (a path ending in ``.journal``), or a SQLAlchemy
    URL whose database driver is installed (Optuna's RDB storage takes any) and an SQLite file
    that can be one (:func:`check_sqlite_file`); whether another database answers is Optuna's to
    say when the first study opens."""
    # Imported here, as SQLAlchemy is everywhere in this module: a quarter second a refusal need not pay.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from bench.stores import JOURNAL_SUFFIX, journal_path

    what = f"Optuna storage {url!r}"
    journal = journal_path(url)
    if journal is not None:
        _check_store_path(what, journal, results, JOURNAL_FILE)
        return
    try:
        parsed = make_url(url)
        _check_driver(what, url)
    except ArgumentError:
        raise PreflightError(
            f"cannot use {what}: neither a SQLAlchemy URL (e.g. sqlite:////abs/path/optuna.db, "
            f"postgresql://user@host/db) nor an Optuna journal file (a path ending in {JOURNAL_SUFFIX})"
        ) from None
    except (NoSuchModuleError, ImportError) as error:
        raise PreflightError(f"cannot use {what}: {first_line(error)}") from None
    if parsed.get_backend_name() == "sqlite":
        check_sqlite_file(what, url, results=results)


@dataclass(frozen=True)
class StoreFile:
    """A kind of store file: what its first bytes are, and how messages name it."""

    header: bytes  # the first bytes of every non-empty file of this kind
    name: str  # "an SQLite database"
    file: str  # "database file"


#: The first 16 bytes of every SQLite 3 database file (https://www.sqlite.org/fileformat.html, 1.3).
SQLITE_FILE = StoreFile(b"SQLite format 3\x00", "an SQLite database", "database file")
#: An Optuna journal: one JSON object per line.
JOURNAL_FILE = StoreFile(b"{", "an Optuna journal", "journal file")


def check_sqlite_file(what: str, url: str, *, results: Path | None = None) -> None:
    """The file of an ``sqlite:///`` URL: SQLite creates a missing file but not its folder, so
    the folder must exist (or be ``results`` or under it: the run makes that one); and an
    existing path must be a file that is empty or an SQLite database, not a folder or another
    file (which SQLite would refuse only once the run has started). Raises :class:`PreflightError`."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if database in (None, "", ":memory:") or str(make_url(url).query.get("mode", "")) == "memory":
        raise PreflightError(f"cannot use {what}: an in-memory database keeps nothing after the run; name a file")
    path = Path(database)
    _check_store_path(what, path, results, SQLITE_FILE)


def _check_store_path(what: str, path: Path, results: Path | None, kind: StoreFile) -> None:
    """The store's folder exists (or is ``results`` or under it: the run makes that one), and
    an existing path is a file that is empty or of ``kind``, not a folder or another file (which
    the store would refuse only once the run has started)."""
    try:
        folder = path.parent
        made_by_run = results is not None and (
            folder.resolve() == results.resolve() or folder.resolve().is_relative_to(results.resolve())
        )
        if not folder.is_dir() and not made_by_run:
            raise PreflightError(f"cannot use {what}: {folder} is not an existing folder")
        if path.is_dir():
            raise PreflightError(f"cannot use {what}: {path} is a folder, not a {kind.file}")
        if path.is_file() and path.stat().st_size:
            with path.open("rb") as file:
                if file.read(len(kind.header)) != kind.header:
                    raise PreflightError(f"cannot use {what}: {path} is not {kind.name}")
    except OSError as error:  # e.g. a name over the file system's limit
        raise PreflightError(f"cannot use {what}: {error.strerror or error}") from None


def _plugin_schemes() -> set[str]:
    from importlib.metadata import entry_points

    return {entry.name for entry in entry_points(group="mlflow.tracking_store")}


def check_ray_address(address: str) -> None:
    """``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``, and a TCP connect within
    :data:`NETWORK_TIMEOUT_S` for the last two (``ray.init`` retries an unreachable head for
    minutes). ``auto`` is left to Ray, which fails fast when no local cluster runs."""
    if address == "auto":
        # Ray's "auto" joins the cluster this machine started (`ray start`), which leaves its address here.
        roots = {os.environ.get("RAY_TMPDIR") or "/tmp", tempfile.gettempdir(), "/tmp"}
        started = any(Path(root, "ray", "ray_current_cluster").is_file() for root in roots)
        if not started and not os.environ.get("RAY_ADDRESS"):
            raise PreflightError(
                "--address auto: no Ray cluster was started on this machine (`ray start --head`); "
                "leave --address out to run locally"
            )
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise PreflightError(f"--address {address!r}: expected 'auto', HOST:PORT or ray://HOST:PORT")
    if not 0 < int(port) < 65536:
        raise PreflightError(f"--address {address!r}: port {port} is not a TCP port (1 to 65535)")
    try:
        socket.create_connection((host, int(port)), timeout=NETWORK_TIMEOUT_S).close()
    except OSError as error:
        raise PreflightError(f"no Ray cluster answers at {address}: {error.strerror or error}") from None
