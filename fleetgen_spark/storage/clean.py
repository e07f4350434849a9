"""Removing a data directory's dataset so that it cannot half-happen: only what fleetgen made, never a symlink.

:meth:`fleetgen_spark.storage.datadir.DataDir` hands a clean here; a local folder is cleaned with renames (below),
object storage and HDFS with a commit marker (see "Without rename" at the end of this docstring).

``POST /clean`` removes ``delta/``, ``checkpoints/`` and ``manifests/`` of a fleetgen data directory (one
holding ``.fleetgen.lock``, :attr:`DataDir.lock_path`) and writes a new ``manifests/`` holding only what the
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

Without rename (``s3a://``, ``hdfs://``; an object store cannot rename a folder):

1. The new manifests are written under ``.clean-ID.new/manifests/``; a staging folder without its commit
   marker is deleted by the next writer, and the old dataset stays.
2. **Commit**: the object ``.clean-ID.commit`` is created. From here on the clean is decided.
3. ``delta/``, ``checkpoints/`` and ``manifests/`` are deleted, the staged files copied into ``manifests/``,
   then the marker deleted, then the staging folder. Each step repeats safely: the next writer that finds a
   marker does steps 3 again (the staged files are still there, as the marker is deleted before them), so a
   kill leaves the old dataset, or, once the next writer has started, none. Between the kill and that start
   a reader may see a half-deleted dataset: on object storage "never half" holds from the next writer on.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleetgen_spark.core.exceptions import FleetGenError
from fleetgen_spark.storage.datadir import MANIFESTS, STATE, TOKEN, DataDir

__all__ = ["CLEANED", "CleanError", "check_cleanable", "clean_data_dir", "finish_interrupted_clean"]

CLEANED = ("delta", "checkpoints", "manifests")
_TRASH = ".trash-"
_STAGING = ".new"
_NEW_MANIFESTS = "new-manifests"
_CLEAN = ".clean-"
_COMMIT = ".commit"


class CleanError(FleetGenError):
    """A directory that clean refuses to touch: the message says why and what would be allowed."""


def check_cleanable(layout: DataDir) -> None:
    """Refuse a directory fleetgen did not make, and any of the three folders that is a symlink or a file."""
    if not layout.is_fleetgen_dir():
        raise CleanError(
            f"{layout.uri} is not a fleetgen data directory (it has no .fleetgen.lock); clean removes only "
            "delta/, checkpoints/ and manifests/ of a directory that fleetgen writes"
        )
    if not layout.is_local:
        return
    for name in CLEANED:
        path = layout.root / name
        if path.is_symlink():
            raise CleanError(f"{path} is a symlink; clean never follows one: remove the link yourself, then clean")
        if os.path.lexists(path) and not path.is_dir():
            raise CleanError(f"{path} is not a folder; clean removes only the folders fleetgen made")


def clean_data_dir(layout: DataDir, state: Mapping[str, Any], token: str | None = None) -> list[str]:
    """Remove the dataset of a data directory (see the module docstring); returns the folders removed.

    ``state`` becomes the new ``manifests/generator_state.json``; ``token``, when given, its ``api_token``.
    """
    check_cleanable(layout)
    trash_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
    if not layout.is_local:
        return _clean_remote(layout, state, token, trash_id)
    root = layout.root
    present = [name for name in CLEANED if (root / name).is_dir()]
    staging = DataDir(root / f"{_TRASH}{trash_id}{_STAGING}")
    staging.root.mkdir()
    (staging.root / _NEW_MANIFESTS).mkdir()
    _stage(staging, _NEW_MANIFESTS, state, token)
    trash = root / f"{_TRASH}{trash_id}"
    os.rename(staging.root, trash)  # the commit point: from here on the dataset is gone, even after a kill
    _finish(trash, root)
    return present


def _stage(staging: DataDir, folder: str, state: Mapping[str, Any], token: str | None) -> None:
    staging.write_json(f"{folder}/{STATE.removeprefix(MANIFESTS + '/')}", dict(state))
    if token is not None:
        staging.write_text(f"{folder}/{TOKEN.removeprefix(MANIFESTS + '/')}", token + "\n")


def finish_interrupted_clean(layout: DataDir) -> list[str]:
    """Complete or undo what a killed clean left (run before anything reads the directory); names what it found."""
    if not layout.is_local:
        return _finish_remote(layout)
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


def _clean_remote(layout: DataDir, state: Mapping[str, Any], token: str | None, clean_id: str) -> list[str]:
    present = [name for name in CLEANED if layout.names(name)]
    staging = f"{_CLEAN}{clean_id}{_STAGING}"
    _stage(layout, f"{staging}/{MANIFESTS}", state, token)
    if not layout.storage.create(f"{_CLEAN}{clean_id}{_COMMIT}", b"committed\n"):  # the commit point
        raise CleanError(f"{layout.uri}: a clean with id {clean_id} exists already; ask again")
    _finish_remote_one(layout, clean_id)
    return present


def _finish_remote(layout: DataDir) -> list[str]:
    names = [n for n in layout.names("") if n.startswith(_CLEAN)]
    committed = {n.removeprefix(_CLEAN).removesuffix(_COMMIT) for n in names if n.endswith(_COMMIT)}
    for clean_id in sorted(committed):
        _finish_remote_one(layout, clean_id)
    for name in names:
        if name.endswith(_STAGING) and name.removeprefix(_CLEAN).removesuffix(_STAGING) not in committed:
            layout.delete_tree(name)  # not committed: the old dataset stays
    return sorted(names)


def _finish_remote_one(layout: DataDir, clean_id: str) -> None:
    """Step 3 of a clean without rename: every step repeats safely while the marker exists."""
    staging = f"{_CLEAN}{clean_id}{_STAGING}"
    for name in CLEANED:
        layout.delete_tree(name)
    for name in layout.names(f"{staging}/{MANIFESTS}"):
        text = layout.read_text(f"{staging}/{MANIFESTS}/{name}")
        if text is not None:
            layout.write_text(f"{MANIFESTS}/{name}", text)
    layout.delete(f"{_CLEAN}{clean_id}{_COMMIT}")  # done: before the staged files go, so a redo still has them
    layout.delete_tree(staging)
