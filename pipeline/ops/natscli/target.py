"""Where an export lands: a temporary sibling directory, renamed into place only once everything is written."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pipeline.base.errors import ConflictError, UsageError
from sinks.local import describe_mode


def prepare_target(directory: str) -> tuple[Path, Path]:
    """(final dir, temporary sibling): everything is written to the sibling and renamed into place at the end.

    The target is looked at without following it: a symlink there (to a directory elsewhere, or dangling) would
    otherwise send the export somewhere the operator did not name. Only a missing name or an empty directory will
    do; the final rename (:func:`publish_target`) re-checks that, since the target may change meanwhile.
    """
    target = Path(directory).expanduser().absolute()
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise UsageError(f"cannot export to {target}: a parent of it is not a directory") from None
    except OSError as e:
        raise UsageError(f"cannot export to {target}: {e.strerror}") from None
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            raise ConflictError(
                f"{target} already exists and is {describe_mode(st.st_mode)}, not an empty directory; export writes "
                "a new directory (and never through a symbolic link)"
            )
        try:
            with os.scandir(target) as it:
                if next(it, None) is not None:
                    raise ConflictError(
                        f"{target} already exists and is not an empty directory; export writes a new one"
                    )
        except OSError as e:
            raise UsageError(f"cannot read {target}: {e.strerror}") from None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"cannot create {target}: a parent of it is not a directory") from None
    except OSError as e:
        raise UsageError(f"cannot create {target}: {e.strerror}") from None
    try:
        tmp = target.parent / f".{target.name}.partial-{os.urandom(4).hex()}"
        tmp.mkdir(mode=0o700)  # natscli creates backup directories 0700
    except OSError as e:
        raise UsageError(f"cannot create {target}: {e.strerror}") from None
    return target, tmp


def publish_target(tmp: Path, target: Path) -> None:
    """Rename the finished export into place. rename(2) replaces an empty directory and nothing else: a symlink,
    a file or a non-empty directory put there while the export ran makes it fail, and is left as it is."""
    try:
        os.rename(tmp, target)
    except OSError as e:
        try:
            found = describe_mode(os.lstat(target).st_mode)
        except OSError:
            found = "something else"
        raise ConflictError(
            f"{target} changed while the export ran (it is now {found}: {e.strerror}); nothing was written there"
        ) from None
