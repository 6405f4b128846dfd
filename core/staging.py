"""Files written beside their destination: target checks, writer-tagged temporary names, clean-up.

slimkit writes an output (an ONNX file) as a temporary file in the destination's own directory and
renames it over the destination only once it is complete and verified, so the destination is always
absent, the old file or the new one. Temporary names say who wrote them::

    .slimkit-<pid>-<host>-<token>.tmp            the file being written
    .slimkit-<pid>-<host>-<token>.tmp.<suffix>   auxiliary files of the same write (``.float.onnx``)

``<host>`` is a short hash of the machine's name. A write removes its own files on every failure path;
a writer killed outright (SIGKILL, power loss) cannot, so each later write into the same directory
removes the files of writers that are gone: same host, and no live process with that pid. Files of
another machine (a shared file system) or of a live process, such as a tuning worker or a distributed
rank writing beside this one, are never touched.

Symbolic links: a destination that is a link is written through it (the link's target is replaced,
the link stays), as ``open(path, "w")`` would; a link loop is an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
from pathlib import Path
from typing import Iterator

from slimkit.errors import ExportError

#: Start of every temporary name slimkit writes into a destination's directory.
TEMP_PREFIX = ".slimkit-"

_TEMP_NAME = re.compile(r"^\.slimkit-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-[0-9a-f]{8}\.tmp(\.|$)")


def host_tag() -> str:
    """Eight hex digits naming this machine in temporary names."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def temp_name(pid: int | None = None) -> str:
    """A fresh temporary file name of writer ``pid`` (this process by default) on this host."""
    return f"{TEMP_PREFIX}{os.getpid() if pid is None else pid}-{host_tag()}-{secrets.token_hex(4)}.tmp"


def check_target(path: str | os.PathLike[str], what: str = "export") -> Path:
    """Checks that a file can be written at ``path`` before any work, and returns the file to replace.

    Args:
        path: the destination the user gave.
        what: the operation, for messages (``export_onnx``).

    Returns:
        ``path``, or the file a symbolic link at ``path`` points to (written through the link).

    Raises:
        ExportError: ``path`` is a directory or another non-regular file, a symbolic link loop, a
            read-only file, or its directory is missing, not a directory or not writable; the message
            names the path.
    """
    given = Path(path)
    target = given
    via = ""
    if given.is_symlink():
        try:
            target = given.resolve(strict=False)
        except (RuntimeError, OSError) as exc:  # Python 3.11 raises RuntimeError on a loop
            raise ExportError(f"{what}: {given} is a symbolic link that cannot be resolved ({exc})") from exc
        if target.is_symlink():
            raise ExportError(f"{what}: {given} is a symbolic link loop")
        via = f" (the target of the symbolic link {given})"
    if target.is_dir():
        raise ExportError(f"{what}: {target}{via} is a directory; give a file path, such as "
                          f"{target / 'model.onnx'}")
    if target.exists() and not target.is_file():
        raise ExportError(f"{what}: {target}{via} exists and is not a regular file")
    parent = target.parent
    if not parent.exists():
        raise ExportError(f"{what}: cannot write {target}{via}: directory {parent} does not exist")
    if not parent.is_dir():
        raise ExportError(f"{what}: cannot write {target}{via}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"{what}: cannot write {target}{via}: directory {parent} is not writable")
    if target.exists() and not os.access(target, os.W_OK):
        # Renaming over it would succeed (it needs the directory's permission only), but the file's
        # mode says it is not to be overwritten.
        raise ExportError(f"{what}: {target}{via} is read-only; it is not replaced")
    return target


class Staged:
    """A write in progress: ``path`` to write, auxiliary names, and :meth:`commit`."""

    def __init__(self, target: Path, path: Path, what: str) -> None:
        self.target = target
        self.path = path
        self._what = what

    def aux(self, suffix: str) -> Path:
        """An auxiliary file of this write (removed with it): the temporary name plus ``suffix``."""
        return self.path.with_name(self.path.name + suffix)

    def commit(self) -> None:
        """Moves the written file over the target in one step (atomic on POSIX and Windows)."""
        try:
            os.replace(self.path, self.target)
        except OSError as exc:
            raise ExportError(f"{self._what}: cannot move the written file into place at {self.target}: "
                              f"{exc.strerror or exc}") from exc


@contextlib.contextmanager
def staged(target: Path, what: str = "export") -> Iterator[Staged]:
    """A temporary file beside ``target`` (see the module doc), removed with its auxiliary files on
    exit unless :meth:`Staged.commit` moved it into place. Stale files of dead writers in the
    directory are removed first.

    Raises:
        ExportError: the temporary file cannot be created.
    """
    remove_stale(target.parent)
    while True:
        path = target.parent / temp_name()
        try:
            # O_EXCL: never another writer's file; mode 0o666 less the umask, as a plain open gives.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise ExportError(f"{what}: cannot create a file in {target.parent} to write {target}: "
                              f"{exc.strerror or exc}") from exc
        os.close(fd)
        break
    try:
        yield Staged(target, path, what)
    finally:
        _remove_own(path)


def _remove_own(path: Path) -> None:
    """``path`` and every auxiliary file named after it (whatever wrote them)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            if entry.name == path.name or entry.name.startswith(path.name + "."):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def remove_stale(directory: Path) -> list[str]:
    """Removes the temporary files of writers on this host that are no longer running.

    Best effort: a file that cannot be removed (permissions, a race with another cleaner) is left.

    Returns:
        The names removed.
    """
    removed: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    host, own = host_tag(), os.getpid()
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or match["host"] != host:
            continue
        pid = int(match["pid"])
        if pid == own or pid_alive(pid):  # own pid: another thread of this process may be writing it
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(entry.name)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie counts as gone). Where that cannot be
    told (not POSIX), every process counts as alive, so that nothing live is removed."""
    if os.name != "posix" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except (OverflowError, ValueError):  # no such pid can exist
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no procfs (macOS): alive as far as we can tell
        return True
    return stat[stat.rfind(")") + 2:][:1] != "Z"
