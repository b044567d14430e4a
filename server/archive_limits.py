"""Bounds on what tarfile and zipfile would allocate for an upload, checked before either parses it.

    scan_tar(body, limit)                     decompress (gzip, bzip2, xz) at most 2 x limit + 1 MiB, refusing on
                                              the way a header record (GNU long name or link, pax) over 64 KiB,
                                              more than 64 headers, or a member over `limit`; returns the plain tar
    check_zip_directory(data, members, what)  walk a zip's central directory, refusing more than `members` entries

tarfile reads a GNU long name or a pax record into memory whole, whatever size its header declares (a 4 KB bzip2
upload declared a 1 GiB name and took 15 s and 2 GiB); zipfile builds one ZipInfo per central directory entry.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
import tarfile

from .errors import ServiceError

__all__ = ["MAX_TAR_HEADERS", "MAX_TAR_RECORD", "check_zip_directory", "scan_tar"]

MAX_TAR_HEADERS = 64
MAX_TAR_RECORD = 64 * 1024  # a GNU long name / long link or a pax header's bytes
_RECORD_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                 tarfile.SOLARIS_XHDTYPE)
_BLOCK = tarfile.BLOCKSIZE
_CHUNK = 1 << 20


def _decompressed(body: bytes):
    """A file over the tar inside `body`, decompressing on demand by the magic bytes."""
    if body[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=io.BytesIO(body))
    if body[:3] == b"BZh":
        return bz2.BZ2File(io.BytesIO(body))
    if body[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(io.BytesIO(body))
    return io.BytesIO(body)


def scan_tar(body: bytes, limit: int) -> bytes:
    """The uncompressed tar in `body`, its headers checked one by one as it is decompressed (see the module)."""
    cap = 2 * limit + _CHUNK
    plain = bytearray()
    stream = _decompressed(body)

    def take(size: int) -> bytes:
        data = stream.read(size)
        plain.extend(data)
        if len(plain) > cap:
            raise ServiceError("payload_too_large", f"the archive unpacks to more than {cap} bytes")
        return data

    try:
        for _ in range(MAX_TAR_HEADERS + 1):
            block = take(_BLOCK)
            if len(block) < _BLOCK or block == bytes(_BLOCK):  # the end (tarfile judges a torn one)
                return bytes(plain)
            size, kind = tarfile.nti(block[124:136]), block[156:157]
            if kind in _RECORD_TYPES and size > MAX_TAR_RECORD:
                raise ServiceError("malformed_model", f"a tar header record (long name or pax) of {size} bytes; "
                                                      f"at most {MAX_TAR_RECORD} are accepted")
            if size > limit:
                raise ServiceError("payload_too_large", f"a tar member of {size} bytes; the limit here is {limit}")
            remaining = -(-size // _BLOCK) * _BLOCK
            while remaining > 0 and take(min(remaining, _CHUNK)):
                remaining -= min(remaining, _CHUNK)
    except lzma.LZMAError as exc:  # gzip and bzip2 raise OSError or EOFError, which the caller answers
        raise ServiceError("malformed_model", f"the archive's xz stream is damaged: {exc}") from exc
    raise ServiceError("malformed_model", f"the archive has more than {MAX_TAR_HEADERS} headers")


def check_zip_directory(data: bytes, max_members: int, what: str) -> None:
    """Refuse a zip whose central directory lists more than `max_members` entries (zipfile would read them all)."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 0xFFFF))
    if end < 0 or end + 22 > len(data):
        return  # no end record: zipfile refuses it
    entries, directory_size = struct.unpack_from("<HI", data, end + 10)
    if entries == 0xFFFF or directory_size == 0xFFFFFFFF:
        raise ServiceError("malformed_model", f"{what} is a zip64 archive; a model fits a plain zip")
    position, count = max(0, end - directory_size), 0
    while position + 46 <= end and data[position:position + 4] == b"PK\x01\x02":
        count += 1
        if count > max_members:
            raise ServiceError("malformed_model", f"{what} has more than {max_members} members")
        name, extra, comment = struct.unpack_from("<HHH", data, position + 28)
        position += 46 + name + extra + comment
