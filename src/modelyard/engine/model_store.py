"""The model store: GGUF files pulled into `<models_dir>/<name>/`, verified and listed.

Each model is `<name>/model.gguf` plus `<name>/manifest.json`; the manifest is written last, so a
model without one (or whose file has the wrong size) was never fully pulled and does not exist.
Pulls of one name are serialised across processes by `flock` on `<models_dir>/<name>.lock`.

Errors: `ModelPullError` (defined in `catalog`, re-exported here) for anything that stops a pull
or a lookup, with a message that says what to do; its subclass `ModelCorrupt` for a pulled file
that no longer matches its manifest.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from modelyard.engine.catalog import (
    CATALOG,
    NAME_RE,
    ModelPullError,
    Resolved,
    checked_name,
    checked_sha256,
    resolve,
)
from modelyard.engine.sources import copy_checked, hash_file, open_source

__all__ = ["LocalModel", "ModelCorrupt", "ModelPullError", "ModelStore"]

MODEL_FILE = "model.gguf"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class LocalModel:
    """A fully pulled model: its file and what its manifest records."""

    name: str
    path: Path
    sha256: str
    size: int
    source: str
    display_name: str
    description: str
    pulled_at: float


class ModelCorrupt(ModelPullError):
    """A pulled model's file no longer matches its manifest."""


class ModelStore:
    """Local models under one directory, which several processes may share."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir).expanduser().absolute()

    def pull(
        self,
        spec: str,
        *,
        name: str | None = None,
        sha256: str | None = None,
        progress: bool = True,
        force: bool = False,
    ) -> LocalModel:
        """Fetch `spec` into the store, checking sha256, size and GGUF magic; returns the model.

        An already pulled model from the same source is returned as is unless `force`.
        """
        resolved = resolve(spec)
        name = checked_name(name or resolved.name, spec)
        expected = checked_sha256(sha256) if sha256 else resolved.sha256
        try:
            self.models_dir.mkdir(parents=True, exist_ok=True)
            with self._lock(name, progress=progress):
                existing = self.get(name)  # another process may have pulled it while we waited
                if (
                    existing is not None
                    and not force
                    and existing.source == resolved.source
                    and expected in (None, existing.sha256)
                ):
                    return existing
                return self._fetch(name, resolved, expected, progress=progress)
        except OSError as exc:  # reading sources is handled there: this is our own disk
            raise ModelPullError(
                f"cannot write the model into {self.models_dir}: {exc}. Free some space or "
                "choose another directory (--models-dir or MODELYARD_MODELS_DIR)."
            ) from exc

    def get(self, name: str) -> LocalModel | None:
        """The model if fully pulled (manifest present, file size matches), else None."""
        model = self._read_manifest(name)
        if model is None:
            return None
        try:
            size = model.path.stat().st_size
        except OSError:
            return None
        return model if size == model.size else None

    def verified(self, name: str) -> LocalModel:
        """The model after re-hashing its file; ModelCorrupt if it changed (nothing is deleted)."""
        model = self._read_manifest(name)
        if model is None:
            raise ModelPullError(
                f"model {name!r} is not pulled into {self.models_dir}; "
                f"run `{_pull_command(name, None)}`"
            )
        try:
            sha256, size = hash_file(model.path)
        except OSError as exc:
            raise ModelCorrupt(
                f"{model.path} of model {name!r} cannot be read ({exc.strerror}); "
                f"pull it again: `{_pull_command(name, model.source)}`"
            ) from exc
        if (sha256, size) != (model.sha256, model.size):
            raise ModelCorrupt(
                f"{model.path} is corrupt: sha256 {sha256} ({size} bytes), but its manifest says "
                f"{model.sha256} ({model.size} bytes). Nothing was deleted; pull it again: "
                f"`{_pull_command(name, model.source)}`"
            )
        return model

    def list(self) -> list[LocalModel]:
        """Every fully pulled model, sorted by name."""
        if not self.models_dir.is_dir():
            return []
        found = (self.get(entry.name) for entry in sorted(self.models_dir.iterdir()))
        return [model for model in found if model is not None]

    def ensure(self, name: str, *, progress: bool = False) -> LocalModel:
        """The pulled model `name`, pulling it first if it is in the catalog."""
        model = self.get(name)
        if model is not None:
            return model
        if name in CATALOG:
            return self.pull(name, progress=progress)
        raise ModelPullError(
            f"model {name!r} is not pulled into {self.models_dir} and is not in the catalog "
            f"({', '.join(CATALOG)}); pull it first: `{_pull_command(name, None)}`"
        )

    def _fetch(
        self, name: str, resolved: Resolved, expected: str | None, *, progress: bool
    ) -> LocalModel:
        """Download to a .partial file, check it, rename it into place, then write the manifest."""
        model_dir = self.models_dir / name
        model_dir.mkdir(exist_ok=True)
        partial = model_dir / f"{MODEL_FILE}.partial"
        try:
            with open_source(resolved.source, workdir=self.models_dir, progress=progress) as stream:
                sha256, size = copy_checked(
                    stream,
                    partial,
                    sha256=expected,
                    size=resolved.size,
                    progress=progress,
                    desc=f"{stream.verb} {name}",
                )
            # The old manifest goes first so no reader ever pairs it with the new file.
            (model_dir / MANIFEST_FILE).unlink(missing_ok=True)
            os.replace(partial, model_dir / MODEL_FILE)
        except BaseException:
            partial.unlink(missing_ok=True)
            with suppress(OSError):
                model_dir.rmdir()  # only succeeds if we left it empty
            raise
        model = LocalModel(
            name,
            model_dir / MODEL_FILE,
            sha256,
            size,
            resolved.source,
            resolved.display_name,
            resolved.description,
            time.time(),
        )
        _write_manifest(model_dir / MANIFEST_FILE, model)
        return model

    def _read_manifest(self, name: str) -> LocalModel | None:
        """The model its manifest describes, without looking at the file; None if absent."""
        if not NAME_RE.fullmatch(name):
            return None
        try:
            data = json.loads((self.models_dir / name / MANIFEST_FILE).read_text("utf-8"))
            return LocalModel(
                name=name,
                path=self.models_dir / name / MODEL_FILE,
                sha256=str(data["sha256"]),
                size=int(data["size"]),
                source=str(data["source"]),
                display_name=str(data.get("display_name") or name),
                description=str(data.get("description") or ""),
                pulled_at=float(data["pulled_at"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @contextmanager
    def _lock(self, name: str, *, progress: bool) -> Iterator[None]:
        """Hold the exclusive per-name pull lock; the lock file is removed when done."""
        path = self.models_dir / f"{name}.lock"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if progress:
                    print(f"Waiting for another pull of {name} to finish...", file=sys.stderr)
                fcntl.flock(fd, fcntl.LOCK_EX)
            # The holder before us may have unlinked the file we locked: then lock the new one.
            with suppress(FileNotFoundError):
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            os.close(fd)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # before unlocking, so waiters see their file is stale
            os.close(fd)


def _write_manifest(path: Path, model: LocalModel) -> None:
    """Write the manifest atomically: a reader sees the old one, none, or the whole new one."""
    data = {key: value for key, value in asdict(model).items() if key != "path"}
    partial = path.with_name(f"{path.name}.partial")
    with partial.open("w", encoding="utf-8") as file:
        json.dump(data, file, indent=2)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


def _pull_command(name: str, source: str | None) -> str:
    """The command that pulls `name` (again, with --force, if `source` says where from)."""
    if name in CATALOG and source in (None, CATALOG[name].source):
        command = f"modelyard models pull {name}"
    else:
        spec = source or "<file, URL or hf://owner/repo/file.gguf>"
        command = f"modelyard models pull {spec} --name {name}"
    return command if source is None else f"{command} --force"
