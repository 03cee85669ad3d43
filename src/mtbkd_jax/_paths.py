"""Checks of the folders a run reads from and writes to, made before any compute.

A run that would fail only when it writes its results, minutes later, fails here at once, with
a message that names the argument (``--out``, ``out_dir``, ...) and the path.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

__all__ = ["prepare_output_dir", "prepare_output_file", "require_input_dir"]

_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def _as_path(path: object, argument: str) -> Path:
    """``path`` as a :class:`Path`, ``~`` expanded to the home folder (as xarray and a shell
    expand it: left as is, a save wrote its temporary file in the home folder and then looked
    for it under a folder named ``~``), raising unless it is a non-empty str or os.PathLike."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(
            f"{argument} must be a folder path (str or os.PathLike), got {type(path).__name__}"
        )
    text = os.fsdecode(os.fspath(path))
    if not text.strip():
        raise ValueError(f"{argument} must be a folder path, got an empty string")
    if "\x00" in text:
        raise ValueError(f"{argument} must be a folder path, got {text!r} (holds a NUL byte)")
    return Path(text).expanduser()


def _existing_ancestor(folder: Path) -> Path:
    """The nearest of ``folder``'s parents (or ``folder`` itself) that exists."""
    for candidate in (folder, *folder.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def prepare_output_dir(path: str | os.PathLike[str], argument: str) -> Path:
    """Create the output folder ``path`` (parents too) if it is missing and check that a file
    can be written in it.

    Args:
        path: the folder (str or os.PathLike).
        argument: how the caller names the path in messages (``"--out"``, ``"out_dir"``).

    Returns:
        The folder as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``path`` is not a str or os.PathLike.
        ValueError: ``path`` is empty, or the folder cannot be created for another reason
            (e.g. a name too long).
        NotADirectoryError: ``path``, or one of its parents, exists and is not a folder.
        PermissionError: the folder cannot be created, or a file cannot be written in it.
    """
    folder = _as_path(path, argument)
    if os.path.lexists(folder) and not folder.is_dir():
        raise NotADirectoryError(
            f"{argument} must be a folder, got {str(folder)!r}, which exists and is not a folder"
        )
    ancestor = _existing_ancestor(folder)
    if ancestor != folder and not ancestor.is_dir():
        raise NotADirectoryError(
            f"{argument} must be a folder path, got {str(folder)!r}; it cannot be created "
            f"because {str(ancestor)!r} is not a folder"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _os_error(argument, folder, "cannot be created", error) from error
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise _os_error(argument, folder, "is not writable", error) from error
    return folder


def prepare_output_file(path: str | os.PathLike[str], argument: str) -> Path:
    """Check that a file can be written at ``path``: its folder is created (parents too) and
    writable, and ``path`` is not a folder. Nothing is written at ``path`` itself.

    Raises:
        TypeError, ValueError, NotADirectoryError, PermissionError: as
            :func:`prepare_output_dir`, for the file's folder.
        IsADirectoryError: ``path`` is an existing folder.
    """
    file = _as_path(path, argument)
    if file.is_dir():
        raise IsADirectoryError(
            f"{argument} must be a file path, got {str(file)!r}, which is a folder"
        )
    prepare_output_dir(file.parent, f"the folder of {argument} ({str(file)!r})")
    return file


def _os_error(argument: str, folder: Path, what: str, error: OSError) -> Exception:
    reason = error.strerror or type(error).__name__
    message = f"{argument} must be a writable folder, got {str(folder)!r}, which {what} ({reason})"
    if error.errno in _DENIED:
        return PermissionError(message)
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        return NotADirectoryError(message)
    return ValueError(message)


def require_input_dir(path: str | os.PathLike[str], argument: str) -> Path:
    """Check that the input folder ``path`` exists and is a folder that can be read.

    Args:
        path: the folder (str or os.PathLike).
        argument: how the caller names the path in messages (``"--data"``, ``"data_path"``).

    Returns:
        The folder as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``path`` is not a str or os.PathLike.
        ValueError: ``path`` is empty.
        FileNotFoundError: nothing exists at ``path``.
        NotADirectoryError: ``path`` exists and is not a folder.
        PermissionError: the folder cannot be listed.
    """
    folder = _as_path(path, argument)
    if not folder.exists():
        raise FileNotFoundError(
            f"{argument} must be an existing folder, got {str(folder)!r}, which does not exist"
        )
    if not folder.is_dir():
        raise NotADirectoryError(
            f"{argument} must be a folder, got {str(folder)!r}, which is not a folder"
        )
    if not os.access(folder, os.R_OK | os.X_OK):
        raise PermissionError(
            f"{argument} must be a readable folder, got {str(folder)!r}, which cannot be read"
        )
    return folder
