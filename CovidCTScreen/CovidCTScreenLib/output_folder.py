"""All-or-nothing output folders: files are written into a hidden folder beside the target and moved
into place at the end, so a failure or a cancel never leaves a half-written result."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError


def check_output_folder(out_dir: str | os.PathLike, overwrite: bool) -> None:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"Output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"Output folder {out} is not empty; choose another folder or pass --overwrite")


@contextmanager
def atomic_folder(out_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden ``.<name>.partial-*`` folder; on success it replaces ``out_dir``, on any error it goes."""
    out = Path(out_dir)
    check_output_folder(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        tmp.chmod(0o755)
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
