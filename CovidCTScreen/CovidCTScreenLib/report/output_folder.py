"""All-or-nothing output folders: files are written into a hidden folder beside the target and moved
into place at the end, so a failure or a cancel never leaves a half-written result.

Every folder written here holds a manifest (``MANIFEST_NAME``) listing its files. ``--overwrite`` only
replaces a folder whose files are all in its manifest: a user's own files are never deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError

MANIFEST_NAME = ".covidctscreen-manifest.json"


def _files_below(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


def _ours(folder: Path) -> bool:
    """True when every file in ``folder`` is listed in its manifest (a folder this package wrote)."""
    try:
        listed = set(json.loads((folder / MANIFEST_NAME).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return set(_files_below(folder)) <= listed | {MANIFEST_NAME}


def _writable_parent(out: Path) -> None:
    """Refuse when the folder that will hold ``out`` cannot be created or written (probed, so root and
    read-only mounts are judged right)."""
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"Output {out}: {parent} is a file, not a folder")
    try:
        Path(tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=parent)).rmdir()
    except OSError as e:
        raise InputError(f"Output {out} cannot be written: {e.strerror or e} in {parent}") from e


def check_destination(out_dir: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse an output location that is the current, home or root folder, overlaps an input, or cannot be
    written."""
    out = Path(out_dir).expanduser().resolve()
    if out == Path.cwd().resolve() or out == Path(out.anchor) or out == Path.home().resolve():
        raise InputError(f"Output {out_dir} is the current, home or root folder; give the name of a new folder")
    for source in inputs:
        src = Path(source).expanduser().resolve()
        if out == src or src in out.parents or out in src.parents:
            raise InputError(f"Output {out_dir} overlaps the input {source}; the input is only read, "
                             f"so write the results to a separate folder")
    _writable_parent(out)


def check_output_folder(out_dir: str | os.PathLike, overwrite: bool, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse an output folder before any work: it must be a new or empty folder (or one this package wrote,
    with ``overwrite``), and pass ``check_destination``."""
    check_destination(out_dir, inputs)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"Output {out_dir} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"Output folder {out_dir} is not empty; choose another folder or pass --overwrite")
        if not _ours(out):
            extra = [f for f in _files_below(out) if f != MANIFEST_NAME][:3]
            raise InputError(f"Output folder {out_dir} holds files CovidCTScreen did not write (e.g. "
                             f"{', '.join(extra)}); --overwrite only replaces its own results, so choose "
                             f"another folder")


@contextmanager
def atomic_folder(out_dir: str | os.PathLike, overwrite: bool = False,
                  inputs: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a hidden ``.<name>.partial-*`` folder; on success it replaces ``out_dir``, on any error it goes."""
    out = Path(out_dir)
    check_output_folder(out, overwrite, inputs)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as e:
        raise InputError(f"Output {out} cannot be written: {e.strerror or e}") from e
    try:
        tmp.chmod(0o755)
        yield tmp
        (tmp / MANIFEST_NAME).write_text(json.dumps({"written_by": "covidctscreen", "files": _files_below(tmp)},
                                                    indent=1) + "\n")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            old.rmdir()
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
