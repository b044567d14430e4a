"""Read a model upload (the two files of quant's integer export) from a tar, zip or msgpack body, never unpickling.

    tar (application/x-tar, optionally gzip)   manifest.json and model.npz, at the top or in one directory
    zip (application/zip)                      the same
    msgpack (application/msgpack)              {"manifest.json": bin|str, "model.npz": bin}

Nothing is extracted to disk: members are read into memory, each capped, and only regular files named
exactly ``manifest.json`` or ``model.npz`` are accepted (no links, no paths that climb, no other members).
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

__all__ = ["MODEL_FILES", "MODEL_MEDIA_TYPES", "read_model_upload"]

MODEL_FILES = ("manifest.json", "model.npz")
_TAR_TYPES = ("application/x-tar", "application/tar", "application/gzip", "application/x-gzip",
              "application/x-gtar")
_ZIP_TYPES = ("application/zip", "application/x-zip-compressed")
MODEL_MEDIA_TYPES = _TAR_TYPES + _ZIP_TYPES + MSGPACK_TYPES
_MAX_MEMBERS = 16
_MAX_NPZ_ARRAYS = 4096


def _member_name(path: str) -> str:
    """The file name of an archive member at the top or one directory down, refusing anything else."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if not parts or len(parts) > 2 or any(p in ("..", "/", "") for p in parts) or parts[-1] not in MODEL_FILES:
        raise ServiceError("malformed_model", f"unexpected archive member {path!r}: the upload holds exactly "
                                              f"{' and '.join(MODEL_FILES)} (at the top or in one directory)")
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
    value = unpack_msgpack(body, "model upload", len(MODEL_FILES))
    if not isinstance(value, dict) or set(value) != set(MODEL_FILES):
        raise ServiceError("malformed_model", f"a msgpack model upload is a map with exactly the keys {MODEL_FILES}")
    files = {}
    for name in MODEL_FILES:
        data = value[name].encode() if isinstance(value[name], str) else value[name]
        if not isinstance(data, bytes):
            raise ServiceError("malformed_model", f"{name} must be bytes (bin) or, for the manifest, a string")
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
    missing = [name for name in MODEL_FILES if name not in files]
    if missing:
        raise ServiceError("malformed_model", f"the upload lacks {', '.join(missing)} (quant.export_integer_model "
                                              "writes both)")
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
