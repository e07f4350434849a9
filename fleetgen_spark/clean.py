"""Removing a data directory's dataset so that it cannot half-happen: only what fleetgen made, never a symlink.

``POST /clean`` removes ``delta/``, ``checkpoints/`` and ``manifests/`` of a fleetgen data directory (one
holding ``.fleetgen.lock``, :attr:`Layout.lock_path`) and writes a new ``manifests/`` holding only what the
service keeps (the paused flag, its token).

Why a SIGKILL at any point leaves the old dataset or none, never half of one:

1. The new ``manifests/`` is prepared in a staging folder ``.trash-ID.new/new-manifests``. Until step 2 the
   data directory holds the old dataset untouched; a staging folder left by a kill is deleted at the next start
   (:func:`finish_interrupted_clean`), and the old dataset stays.
2. **Commit**: one ``rename(2)`` of ``.trash-ID.new`` to ``.trash-ID``. A rename within one file system is
   atomic, so after a kill the folder has either the old name (not decided: step 1) or the new one (decided).
3. The three folders are renamed into ``.trash-ID`` one by one, then ``new-manifests`` is renamed to
   ``manifests``. Every step is a rename and every state between two of them is recognised: while
   ``.trash-ID/new-manifests`` exists the swap is unfinished, and the next start moves what is left of the old
   folders into the trash and puts the new ``manifests/`` in place: the dataset is gone, the kept state is there.
4. The trash is deleted; a kill midway leaves a ``.trash-ID`` without ``new-manifests``, which the next start
   deletes.

Renames move a symlink itself, and :func:`shutil.rmtree` deletes links without following them, so nothing
outside the data directory is touched; a data directory whose ``delta``, ``checkpoints`` or ``manifests`` is a
symlink (or not a folder) is refused before anything changes. No fsync: the promise is about a killed process;
after a power loss the file system's own journal decides which rename survived, which is still one of the
states above.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleetgen_spark.exceptions import FleetGenError
from fleetgen_spark.manifests import Layout, write_json_atomic
from fleetgen_spark.rest import TOKEN_FILE, write_token

__all__ = ["CLEANED", "CleanError", "check_cleanable", "clean_data_dir", "finish_interrupted_clean"]

CLEANED = ("delta", "checkpoints", "manifests")
_TRASH = ".trash-"
_STAGING = ".new"
_NEW_MANIFESTS = "new-manifests"


class CleanError(FleetGenError):
    """A directory that clean refuses to touch: the message says why and what would be allowed."""


def check_cleanable(layout: Layout) -> None:
    """Refuse a directory fleetgen did not make, and any of the three folders that is a symlink or a file."""
    marker = layout.lock_path
    if not marker.is_file() or marker.is_symlink():
        raise CleanError(
            f"{layout.root} is not a fleetgen data directory (it has no {marker.name}); clean removes only "
            "delta/, checkpoints/ and manifests/ of a directory that fleetgen writes"
        )
    for name in CLEANED:
        path = layout.root / name
        if path.is_symlink():
            raise CleanError(f"{path} is a symlink; clean never follows one: remove the link yourself, then clean")
        if os.path.lexists(path) and not path.is_dir():
            raise CleanError(f"{path} is not a folder; clean removes only the folders fleetgen made")


def clean_data_dir(layout: Layout, state: Mapping[str, Any], token: str | None = None) -> list[str]:
    """Remove the dataset of a data directory (see the module docstring); returns the folders removed.

    ``state`` becomes the new ``manifests/generator_state.json``; ``token``, when given, its ``api_token``.
    """
    check_cleanable(layout)
    root = layout.root
    present = [name for name in CLEANED if (root / name).is_dir()]
    trash_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
    staging = root / f"{_TRASH}{trash_id}{_STAGING}"
    staging.mkdir()
    new_manifests = staging / _NEW_MANIFESTS
    new_manifests.mkdir()
    write_json_atomic(new_manifests / layout.state.name, dict(state))
    if token is not None:
        write_token(new_manifests / TOKEN_FILE, token)
    trash = root / f"{_TRASH}{trash_id}"
    os.rename(staging, trash)  # the commit point: from here on the dataset is gone, even after a kill
    _finish(trash, root)
    return present


def finish_interrupted_clean(layout: Layout) -> list[str]:
    """Complete or undo what a killed clean left (run before anything reads the directory); names what it found."""
    root = layout.root
    if not root.is_dir():
        return []
    found = sorted(p for p in root.iterdir() if p.name.startswith(_TRASH) and not p.is_symlink() and p.is_dir())
    for trash in found:
        if trash.name.endswith(_STAGING):
            shutil.rmtree(trash)  # not committed: the old dataset stays
        else:
            _finish(trash, root)
    return [p.name for p in found]


def _finish(trash: Path, root: Path) -> None:
    """Steps 3 and 4: every step is a rename or a delete that a second run repeats safely."""
    new_manifests = trash / _NEW_MANIFESTS
    if new_manifests.is_dir():
        for name in CLEANED:
            _move_aside(root / name, trash)
        for _ in range(5):
            try:
                os.rename(new_manifests, root / "manifests")
                break
            except OSError:  # a log line written meanwhile recreated manifests/: move that aside too
                _move_aside(root / "manifests", trash)
        else:
            os.rename(new_manifests, root / "manifests")
    # The clean is done once the swap is: a trash that cannot be deleted now is deleted at the next start.
    shutil.rmtree(trash, ignore_errors=True)


def _move_aside(path: Path, trash: Path) -> None:
    if not os.path.lexists(path):
        return
    target = trash / path.name
    count = 0
    while os.path.lexists(target):
        count += 1
        target = trash / f"{path.name}-{count}"
    os.rename(path, target)
