"""The one atomic file writer: a temporary file in the target's folder, then ``os.replace``.

Readers (a report viewer, another CI shard merging into the same baseline) see the old file or
the new one, never half of one. Storage and the reports both write through it; the default
model's safetensors conversion renames a whole directory and keeps its own rename (sources.py).
"""
from __future__ import annotations

import os
import tempfile


def write_atomic(path: str, data: str | bytes, *, prefix: str = ".quantperf-", suffix: str = "",
                 durable: bool = False) -> None:
    """Write ``data`` (text is UTF-8) to ``path`` whole or not at all, creating its folder.

    The file gets the permissions a plain ``open`` would give (mkstemp's are owner-only), so a
    baseline on shared storage stays readable by the other runners. ``durable`` also fsyncs
    before the rename: baselines must survive a crash, reports can be written again.
    """
    d = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(d, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=d)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
