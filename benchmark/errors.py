"""Errors that the CLI reports as one line and an exit code (2; 130 for an interrupted run), a
user mistake or a fault of the user's files, not a bug; and the checks of command-line values
that raise them before anything heavy is imported or anything is written.

Every ``UserError`` goes the one error path: ``python -m benchmark`` prints ``error: <message>``
(one line naming the file or the setting) and exits with ``exit_code``; inside a run the runner
first writes it to the run's ``log.txt`` and a ``{"phase": "error", ...}`` row of
``stats.jsonl``. ``--debug`` adds the traceback.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any, Iterator


class UserError(Exception):
    """A mistake in what the user asked for: bad name, bad override, missing data file."""

    exit_code = 2


class DataNotFoundError(UserError):
    """A dataset file or folder is missing; the message names it, the layout and its source."""


class RunFileError(UserError):
    """A file of a run folder is missing, truncated or not what it should be; the message names it."""


class RunLockedError(UserError):
    """Another run, resume or eval holds the run folder's lock."""


class RunInterrupted(UserError):
    """Ctrl-C (SIGINT) or SIGTERM during a command; the message says how to resume. Printed without
    the ``error:`` prefix, exit code 130 as a shell reports a process stopped by SIGINT."""

    exit_code = 130
    prefix = ""


class Terminated(KeyboardInterrupt):
    """SIGTERM during ``run``: what ``scancel``, a SLURM time limit or preemption and ``torchrun``
    (when another rank failed) send. Raised from the signal handler so that the run records the
    interruption and keeps its snapshot exactly as for Ctrl-C, instead of dying unrecorded."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread while the block runs (elsewhere, e.g. a
    worker thread, signals cannot be handled and the block runs unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (a multi-line message is joined with spaces)."""
    text = str(exc.args[0]) if exc.args else str(exc)
    return " ".join(part.strip() for part in text.splitlines() if part.strip()) or type(exc).__name__


def read_json_file(path: Path, what: str = "") -> Any:
    """JSON from ``path``; a missing, unreadable or truncated file is a ``RunFileError`` naming it."""
    path = Path(path)
    label = f" ({what})" if what else ""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RunFileError(f"{path}: missing{label}") from None
    except UnicodeDecodeError:
        raise RunFileError(f"{path}: not a JSON text file (undecodable bytes){label}") from None
    except OSError as exc:
        raise RunFileError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__}){label}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problem = "empty" if not text.strip() else f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        raise RunFileError(f"{path}: {problem}; truncated or corrupt{label}") from None


# ----------------------------------------------------------------------------- run flags

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_run_flags(*, limit: Any = None, batch_size: Any = 32, seed: Any = 0, num_threads: Any = 0,
                    out: str | None = None) -> None:
    """The run flags a command line gives (``--limit --batch-size --seed --threads --out``), checked
    before anything is imported or created: one ``UserError`` naming the first bad flag."""
    if limit is not None and not (_is_int(limit) and limit >= 1):
        raise UserError(f"--limit {limit}: must be an integer >= 1 (images per split; leave it out for all)")
    if not (_is_int(batch_size) and batch_size >= 1):
        raise UserError(f"--batch-size {batch_size}: must be an integer >= 1")
    if not (_is_int(seed) and seed >= 0):
        raise UserError(f"--seed {seed}: must be an integer >= 0")
    if not (_is_int(num_threads) and num_threads >= 0):
        raise UserError(f"--threads {num_threads}: must be an integer >= 0 (0 = the process default)")
    if out is not None:
        check_out_folder(out)


def check_out_folder(out: str, flag: str = "--out") -> None:
    """``out`` is, or can become, a writable folder: not a file, not ``/dev/null``, not inside
    ``/proc`` or a read-only file system. Checked without leaving anything behind (a probe folder
    in the nearest existing parent is made and removed at once; root passes ``os.access``)."""
    import tempfile

    path = Path(out).expanduser()
    if str(out).strip() == "":
        raise UserError(f"{flag}: empty path")
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {out}: is a file, not a folder")
    parent = path
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {out}: {parent} is not writable")
    try:
        probe = tempfile.mkdtemp(prefix=".segbench-probe-", dir=parent)
    except OSError as exc:
        raise UserError(f"{flag} {out}: cannot create a folder in {parent} ({exc.strerror or type(exc).__name__})") \
            from None
    os.rmdir(probe)
