"""Read a model upload (quant's artifact, or its older integer export) from a tar, zip or msgpack body, never
unpickling.

    tar (application/x-tar, optionally gzip)   manifest.json, graph.json and weights.safetensors (quant.export), or
                                               manifest.json and model.npz (quant.export_integer_model), at the top
                                               or in one directory
    zip (application/zip)                      the same
    msgpack (application/msgpack)              {"manifest.json": bin|str, "graph.json": bin|str, ...}

Nothing is extracted to disk: members are read into memory, each capped, and only regular files with exactly
those names are accepted (no links, no paths that climb, no other members), all of one of the two sets.
Before tarfile or zipfile parse anything, server.archive_limits bounds what they would allocate: a tar's headers
(GNU long names, pax records) and decompressed size, a zip's member count.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import PurePosixPath

from .codecs import MSGPACK_TYPES, unpack_msgpack
from .archive_limits import check_zip_directory, scan_tar
from .errors import ServiceError

__all__ = ["ARTIFACT_FILES", "MODEL_FILES", "MODEL_MEDIA_TYPES", "read_model_upload"]

MODEL_FILES = ("manifest.json", "model.npz")
ARTIFACT_FILES = ("manifest.json", "graph.json", "weights.safetensors")
_NAMES = tuple(dict.fromkeys(MODEL_FILES + ARTIFACT_FILES))
_TEXT_FILES = ("manifest.json", "graph.json")
_TAR_TYPES = ("application/x-tar", "application/tar", "application/gzip", "application/x-gzip",
              "application/x-gtar")
_ZIP_TYPES = ("application/zip", "application/x-zip-compressed")
MODEL_MEDIA_TYPES = _TAR_TYPES + _ZIP_TYPES + MSGPACK_TYPES
_MAX_MEMBERS = 16
_MAX_NPZ_ARRAYS = 4096


def _member_name(path: str) -> str:
    """The file name of an archive member at the top or one directory down, refusing anything else."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if not parts or len(parts) > 2 or any(p in ("..", "/", "") for p in parts) or parts[-1] not in _NAMES:
        raise ServiceError("malformed_model", f"unexpected archive member {path!r}: the upload holds exactly "
                                              f"{', '.join(ARTIFACT_FILES)} or {' and '.join(MODEL_FILES)} (at the "
                                              "top or in one directory)")
    return parts[-1]


def _checked(files: dict[str, bytes], name: str, size: int, limit: int) -> None:
    if name in files:
        raise ServiceError("malformed_model", f"the upload holds {name} twice")
    if size > limit:
        raise ServiceError("payload_too_large", f"{name} unpacks to {size} bytes; the limit here is {limit}")


def _from_tar(body: bytes, limit: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    plain = scan_tar(body, limit)  # headers bounded and the stream decompressed, before tarfile reads anything
    with tarfile.open(fileobj=io.BytesIO(plain), mode="r:") as archive:
        for member in archive:
            if member.isdir():
                continue
            name = _member_name(member.name)
            if not member.isreg():
                raise ServiceError("malformed_model", f"archive member {member.name!r} is not a regular file")
            _checked(files, name, member.size, limit)
            files[name] = archive.extractfile(member).read(limit + 1)
    return files


def _from_zip(body: bytes, limit: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    check_zip_directory(body, _MAX_MEMBERS, "the archive")
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        for member in archive.infolist():
            if member.is_dir():
                continue
            name = _member_name(member.filename)
            _checked(files, name, member.file_size, limit)
            with archive.open(member) as handle:
                data = handle.read(limit + 1)
            _checked({}, name, len(data), limit)  # the declared size may lie
            files[name] = data
    return files


def _from_msgpack(body: bytes, limit: int) -> dict[str, bytes]:
    value = unpack_msgpack(body, "model upload", len(ARTIFACT_FILES))
    if not isinstance(value, dict) or set(value) not in (set(MODEL_FILES), set(ARTIFACT_FILES)):
        raise ServiceError("malformed_model", f"a msgpack model upload is a map with exactly the keys "
                                              f"{ARTIFACT_FILES} or {MODEL_FILES}")
    files = {}
    for name in value:
        data = value[name].encode() if isinstance(value[name], str) and name in _TEXT_FILES else value[name]
        if not isinstance(data, bytes):
            raise ServiceError("malformed_model", f"{name} must be bytes (bin) or, for JSON files, a string")
        _checked(files, name, len(data), limit)
        files[name] = data
    return files


def read_model_upload(body: bytes, content_type: str, limit: int) -> dict[str, bytes]:
    """The manifest and npz bytes of a model upload, each at most `limit` bytes once unpacked."""
    media = content_type.split(";")[0].strip().lower()
    try:
        if media in _TAR_TYPES:
            files = _from_tar(body, limit)
        elif media in _ZIP_TYPES:
            files = _from_zip(body, limit)
        elif media in MSGPACK_TYPES:
            files = _from_msgpack(body, limit)
        else:
            raise ServiceError("unsupported_media_type", f"upload a model as {_TAR_TYPES[0]}, {_ZIP_TYPES[0]} or "
                                                         f"{MSGPACK_TYPES[0]}, not {media!r}")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as exc:
        raise ServiceError("malformed_model", f"the upload is not a readable {media} archive: {exc}") from exc
    if set(files) == set(ARTIFACT_FILES):
        return files
    missing = [name for name in MODEL_FILES if name not in files]
    if missing or set(files) != set(MODEL_FILES):
        raise ServiceError("malformed_model", f"the upload holds {sorted(files)}: send {', '.join(ARTIFACT_FILES)} "
                                              f"(quant.export) or {' and '.join(MODEL_FILES)} "
                                              "(quant.export_integer_model)")
    _check_npz(files["model.npz"], limit)
    return files


def _check_npz(data: bytes, limit: int) -> None:
    """Refuse a model.npz that is not a zip of .npy members or whose arrays unpack past `limit` bytes."""
    check_zip_directory(data, _MAX_NPZ_ARRAYS, "model.npz")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:  # unsupported zip version
        raise ServiceError("malformed_model", f"model.npz is not an npz archive: {exc}") from exc
    unpacked = sum(m.file_size for m in members)
    if unpacked > limit:
        raise ServiceError("payload_too_large", f"model.npz unpacks to {unpacked} bytes; the limit here is {limit}")
