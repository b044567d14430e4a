"""Archive bodies for upload tests: a tar (optionally compressed, optionally with symlink members) or a zip of
named byte strings."""

import io
import tarfile
import zipfile


def tar_of(files: dict[str, bytes], compression: str = "", links: tuple[str, ...] = ()) -> bytes:
    """`files` (member name -> bytes) as a tar archive compressed by `compression` ("", "gz", "bz2", "xz"), plus a
    symlink to /etc/passwd under each name in `links`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}" if compression else "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            archive.addfile(info)
    return buffer.getvalue()


def zip_of(files: dict[str, bytes]) -> bytes:
    """`files` (member name -> bytes) as a zip archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()
