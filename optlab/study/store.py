"""The crash-safe results store: one JSON file per finished candidate.

Layout of a results folder::

    results_dir/optlab-store.json     manifest: {"format": "optlab-store", "format_version": 1, ...}
    results_dir/rows/<fingerprint>.json   one record per candidate (see `Store.put`)
    results_dir/artifacts/<name>-<fingerprint[:12]>/      a candidate's files (ONNX models, saved modules)
    results_dir/artifacts/serving/<fingerprint[:12]>/     the same candidate rebuilt for serving

The store owns this layout (`artifacts_dir`, `serving_dir`): the study and its serving figures
ask it for their folders rather than building paths themselves.

Why one file per row: each record is written to a temporary file, flushed, fsync'ed and
then `os.replace`d onto its final name, which is atomic. A process killed at any instant
(SIGKILL, a kernel restart) leaves either the complete record or none, plus at most a
stray temp file that readers ignore, so a study loses at most the candidate in flight,
and no repair step is needed (an append-only .jsonl can end in a torn line). It also lets
several writers (a distributed executor) share a folder without a lock. The format is
plain JSON, readable without optlab.

One folder, one study: `bind(identity)` records the study's identity (the baseline's and
the data's fingerprints) in the manifest the first time, and refuses another study's
folder afterwards, so two baselines never end up in one table. `lock()` (a `filelock`
lock file) lets one study run write a folder at a time: a second process fails at once
with a message naming the holder, or waits `timeout_s` for it.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from optlab import __version__

FORMAT = "optlab-store"
FORMAT_VERSION = 1
MANIFEST = "optlab-store.json"
ROWS = "rows"


class IncompatibleStore(ValueError):
    """A results folder this optlab cannot read (another format or format version)."""


class OtherStudyFolder(IncompatibleStore):
    """The results folder holds another study's rows (another baseline or data set);
    `difference` says which, without the fix (callers with other words for it use it)."""

    def __init__(self, message: str, difference: str = ""):
        super().__init__(message)
        self.difference = difference


class StoreBusy(RuntimeError):
    """Another study run holds the results folder's lock."""


ARTIFACTS = "artifacts"


def slug(text: str, limit: int = 60) -> str:
    """`text` as a safe folder-name part (letters, digits and ._=- kept, at most `limit` characters)."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")[:limit] or "candidate"


LOCK = ".optlab.lock"
LOCK_OWNER = ".optlab.lock.owner.json"


def to_jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays unwrapped, NaN/inf -> None, paths -> str."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    return str(value)


def atomic_write_json(path: Path, payload: Any) -> None:
    """Write JSON so that `path` holds either its old content or all of the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    text = json.dumps(to_jsonable(payload), indent=1, sort_keys=True, allow_nan=False)
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Store:
    """A results folder. `put` writes one record at once, atomically; `get` finds a record by
    fingerprint. `read_only=True` never writes (used for reference folders from another machine)."""

    def __init__(self, path: str | os.PathLike, *, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        self.rows_dir = self.path / ROWS
        self.manifest = self._open()

    # -- opening and format checks ----------------------------------------------------
    def _open(self) -> dict[str, Any]:
        manifest_path = self.path / MANIFEST
        if self.read_only and not self.path.is_dir():
            raise FileNotFoundError(f"results folder {self.path} does not exist; pass the folder a study wrote "
                                    f"(it holds {MANIFEST} and rows/)")
        if manifest_path.exists():
            manifest = self._read_manifest(manifest_path)
        elif self.rows_dir.is_dir() and any(self.rows_dir.iterdir()):
            raise IncompatibleStore(
                f"{self.path} has a rows/ folder but no {MANIFEST}: it was not written by optlab's store "
                f"(or its manifest was deleted). Choose another results_dir, or move this folder away.")
        elif self.read_only:
            raise IncompatibleStore(f"{self.path} is not an optlab results folder (no {MANIFEST}); pass the "
                                    f"results_dir of a study")
        else:

            self.path.mkdir(parents=True, exist_ok=True)
            manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "created_at": _now(),
                        "optlab_version": __version__,
                        "layout": "rows/<fingerprint>.json, one JSON record per candidate"}
            atomic_write_json(manifest_path, manifest)
        if not self.read_only:
            self.rows_dir.mkdir(exist_ok=True)
            self._remove_stale_temp_files()
        return manifest

    def _read_manifest(self, manifest_path: Path) -> dict[str, Any]:
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise IncompatibleStore(f"{manifest_path} is not readable JSON ({error}); this folder was not "
                                    f"written by optlab's store. Choose another results_dir.") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise IncompatibleStore(f"{manifest_path} does not describe an {FORMAT!r} folder "
                                    f"(format={manifest.get('format') if isinstance(manifest, dict) else None!r}); "
                                    f"choose another results_dir")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            by = f" by optlab {manifest['optlab_version']}" if manifest.get("optlab_version") else ""
            if isinstance(version, int) and version > FORMAT_VERSION:
                fix = "upgrade optlab to read it, or use a new results_dir"
            else:
                fix = "use a new results_dir (or delete this folder to re-measure everything)"
            raise IncompatibleStore(
                f"{self.path} was written{by} in store format version {version!r}; this optlab reads format "
                f"version {FORMAT_VERSION} only, so the folder is not read (to avoid misreading it): {fix}")
        return manifest

    def _remove_stale_temp_files(self) -> None:
        for tmp in self.rows_dir.glob(".*.tmp"):
            try:
                pid = int(tmp.name.rsplit(".", 2)[-2])
            except (ValueError, IndexError):
                continue
            if pid != os.getpid() and not _pid_alive(pid):
                tmp.unlink(missing_ok=True)

    # -- one folder, one study ----------------------------------------------------------
    def bind(self, identity: dict[str, Any], *, fix: str = "") -> None:
        """Bind this folder to one study: `identity` maps parts ("baseline", "data") to
        fingerprints; `fix` is appended to the error (e.g. a subfolder to use instead).
        The first bind writes it to the manifest; a different one raises OtherStudyFolder.
        A folder written before binding existed is bound if its rows agree with `identity`."""
        if self.read_only:
            raise PermissionError(f"{self.path} was opened read-only; it is never bound")
        bound = self.manifest.get("study")
        if bound is None:
            bound = self._identity_from_rows(identity)
        if bound is not None and any(bound.get(part) != value for part, value in identity.items()
                                     if part in ("baseline", "data")):
            differs = [part for part in ("baseline", "data") if bound.get(part) != identity.get(part)]
            theirs = ", ".join(f"{part} {str(bound.get(part))[:12]}" for part in differs)
            ours = ", ".join(f"{part} {str(identity.get(part))[:12]}" for part in differs)
            named = f" ('{bound['name']}')" if bound.get("name") else ""
            difference = f"holds another study's results{named}: {theirs}; this study has {ours}"
            raise OtherStudyFolder(f"results folder {self.path} {difference}. Pass another results_dir{fix or ''} "
                                   f"(or delete the folder to start over)", difference)
        if self.manifest.get("study") != {**(bound or {}), **identity}:
            self.manifest = {**self.manifest, "study": {**(bound or {}), **identity}}
            atomic_write_json(self.path / MANIFEST, self.manifest)

    def _identity_from_rows(self, identity: dict[str, Any]) -> dict[str, Any] | None:
        """The identity older rows (written before binding) agree on, or None for an empty folder."""
        seen = {(record.get("key") or {}).get("model") for record in self.records()} - {None}
        data = {(record.get("key") or {}).get("data") for record in self.records()} - {None}
        if not seen and not data:
            return None
        if len(seen) > 1 or len(data) > 1:
            return {"baseline": "several baselines", "data": "several data sets"}
        return {"baseline": next(iter(seen), identity.get("baseline")), "data": next(iter(data), identity.get("data"))}

    @contextlib.contextmanager
    def lock(self, timeout_s: float = 0.0) -> Iterator[None]:
        """Hold the folder's write lock for the block. Another holder: wait up to `timeout_s`
        (0: fail at once), then raise StoreBusy naming it (pid, host, since when)."""
        from filelock import FileLock, Timeout

        if self.read_only:
            raise PermissionError(f"{self.path} was opened read-only; it is never locked")
        lock = FileLock(os.fspath(self.path / LOCK), timeout=max(float(timeout_s), 0.0))
        try:
            lock.acquire()
        except Timeout:
            owner = self._lock_owner()
            waited = f" after waiting {timeout_s:g} s" if timeout_s > 0 else ""
            raise StoreBusy(f"results folder {self.path} is being written by another study run{owner}{waited}; "
                            f"wait for it to finish, or pass another results_dir") from None
        try:
            import socket

            atomic_write_json(self.path / LOCK_OWNER, {"pid": os.getpid(), "host": socket.gethostname(),
                                                       "since": _now()})
            yield
        finally:
            (self.path / LOCK_OWNER).unlink(missing_ok=True)
            lock.release()

    def _lock_owner(self) -> str:
        try:
            owner = json.loads((self.path / LOCK_OWNER).read_text(encoding="utf-8"))
            return f" (pid {owner['pid']} on {owner['host']}, since {owner['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    # -- records ----------------------------------------------------------------------
    def _record_path(self, fingerprint: str) -> Path:
        if not fingerprint or not all(c in "0123456789abcdef" for c in fingerprint):
            raise ValueError(f"a fingerprint is a lowercase hex digest; got {fingerprint!r}")
        return self.rows_dir / f"{fingerprint}.json"

    def put(self, fingerprint: str, row: dict[str, Any], key: dict[str, Any] | None = None) -> Path:
        """Write one record {fingerprint, key, row, written_at} atomically; returns its path."""
        if self.read_only:
            raise PermissionError(f"{self.path} was opened read-only (a reference folder); it is never written")
        path = self._record_path(fingerprint)
        record = {"format_version": FORMAT_VERSION, "fingerprint": fingerprint, "key": key,
                  "written_at": _now(), "row": row}
        atomic_write_json(path, record)
        return path

    def get(self, fingerprint: str) -> dict[str, Any] | None:
        """The record stored under `fingerprint`, or None."""
        return self._load(self._record_path(fingerprint))

    def _load(self, path: Path) -> dict[str, Any] | None:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            warnings.warn(f"ignoring unreadable result record {path} ({error}); it will be measured again",
                          stacklevel=3)
            return None
        if not isinstance(record, dict) or record.get("format_version") != FORMAT_VERSION or "row" not in record:
            warnings.warn(f"ignoring result record {path} in an unknown layout; it will be measured again",
                          stacklevel=3)
            return None
        return record

    def discard(self, fingerprint: str) -> None:
        if self.read_only:
            raise PermissionError(f"{self.path} was opened read-only")
        self._record_path(fingerprint).unlink(missing_ok=True)

    # -- artifacts ----------------------------------------------------------------------
    def artifacts_dir(self, name: str, fingerprint: str) -> Path:
        """Where the candidate `name` (with this fingerprint) writes its files; not created here."""
        return self.path / ARTIFACTS / f"{slug(name)}-{fingerprint[:12]}"

    def serving_dir(self, fingerprint: str) -> Path:
        """A fresh folder for the candidate with this fingerprint rebuilt to be served (created)."""
        folder = self.path / ARTIFACTS / "serving" / str(fingerprint)[:12]
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def records(self) -> list[dict[str, Any]]:
        """Every readable record, oldest first."""
        loaded = (self._load(p) for p in sorted(self.rows_dir.glob("*.json")))
        return sorted((r for r in loaded if r is not None), key=lambda r: (r.get("written_at") or "", r["fingerprint"]))

    def rows(self) -> list[dict[str, Any]]:
        return [record["row"] for record in self.records()]

    def fingerprints(self) -> set[str]:
        return {p.stem for p in self.rows_dir.glob("*.json")} if self.rows_dir.is_dir() else set()

    def __contains__(self, fingerprint: object) -> bool:
        return isinstance(fingerprint, str) and self._record_path(fingerprint).exists()

    def __len__(self) -> int:
        return len(self.fingerprints())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records())

    def __repr__(self) -> str:
        mode = ", read_only" if self.read_only else ""
        return f"Store({os.fspath(self.path)!r}{mode}: {len(self)} rows)"


def reference_rows(path: str | os.PathLike, label: str, price_per_hour_usd: float | None = None) -> list[dict]:
    """The successful rows of another machine's results folder (opened read-only), relabelled as
    reference rows: status="reference", `source=label`, the candidate named with the label, and
    that machine's price per hour if given. Errors are left out: they say nothing about this machine."""
    if not isinstance(label, str) or not label.strip():
        raise ValueError("load_reference() needs a label naming where the figures come from, e.g. label='H100'")
    loaded = []
    for record in Store(path, read_only=True).records():
        row = dict(record["row"])
        if row.get("status") not in ("ok", "reference"):
            continue
        row.update(status="reference", source=label, cached=False, reference_dir=os.fspath(Path(path)),
                   candidate=f"{row.get('candidate')} [{label}]", reference_price_per_hour_usd=price_per_hour_usd)
        loaded.append(row)
    if not loaded:
        warnings.warn(f"no successful rows in reference folder {path}", stacklevel=3)
    return loaded


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
