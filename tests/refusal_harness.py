"""What the refusal tests share: the CLI in this process or in a subprocess, the one-line-refusal
standard, and copies of a feed or a run directory to damage."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import gc
import io
import locale
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = ["--iterations", "1", "--iteration-minutes", "0.2"]


def mm(*argv: str, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 600):
    return subprocess.run(
        [sys.executable, "-m", "mm_sim", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def cli(
    *argv: str, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``mm`` without starting an interpreter, whose imports are most of a refused call's second
    or two. The real ``mm_sim.cli.main`` runs in this process and sees what ``python -m mm_sim``
    would: its arguments (``sys.argv`` too), the environment with ``env`` laid over it, ``cwd``,
    structlog unconfigured, a context of its own, stdout and stderr as pipes; its exit status
    is the interpreter's (an argparse ``SystemExit`` too). What it leaves behind fails the
    test, since the next call would run on it where a subprocess starts clean: a thread, a
    child process, an open file (a run's lock), a signal handler, a logging handler, a changed
    environment or directory."""
    from mm_sim.cli import main

    _start_libuv()
    with (
        _as_started(list(argv), env or {}, cwd),
        _hang_guard(timeout, argv),
        _captured() as output,
    ):
        before = _process_state()
        code = contextvars.copy_context().run(_exit_status, main, list(argv))
        leaked = _left_behind(before)
        if leaked:
            # Files held by an exception's frames (a memmap, an npz) wait for the cycle
            # collector, where a process's exit would close them: only what stays counts.
            gc.collect()
            leaked = _left_behind(before)
    r = subprocess.CompletedProcess(["mm_sim", *argv], code, *output)
    assert not leaked, ("left behind in the process", leaked, r.stderr[-3000:])
    return r


@contextlib.contextmanager
def _captured() -> Iterator[list[str]]:
    """File descriptors 1 and 2 go to files, as a subprocess's to its pipes, so what a child
    process or a C library writes there is read too, and ``sys.stdout``/``sys.stderr`` write to
    them with the encoding and error handlers the interpreter gives a pipe (on stdout a path of
    undecodable bytes is an error, or escaped, as the locale has it). The streams are closed
    afterwards: one kept past the call (structlog's PrintLogger kept the stream it was made
    with) fails where it is used instead of writing into another test's output. Yields the
    list that holds stdout's text and stderr's once the call is over."""
    (out_enc, out_errors), (err_enc, err_errors) = _pipe_encodings()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        streams = sys.stdout, sys.stderr
        for s in streams:
            s.flush()
        fds = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = open(1, "w", encoding=out_enc, errors=out_errors, closefd=False)  # noqa: SIM115
        sys.stderr = open(  # noqa: SIM115
            2, "w", encoding=err_enc, errors=err_errors, closefd=False, buffering=1
        )
        output: list[str] = []
        try:
            yield output
        finally:
            for s in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    s.close()
            sys.stdout, sys.stderr = streams
            for fd, saved in zip((1, 2), fds, strict=True):
                os.dup2(saved, fd)
                os.close(saved)
            output += [_text(out), _text(err)]


@functools.cache
def _pipe_encodings() -> tuple[tuple[str, str], tuple[str, str]]:
    """(encoding, errors) of stdout and of stderr in an interpreter whose stdio are pipes, from
    one: they follow the locale, UTF-8 mode and PYTHONIOENCODING as it reads them."""
    probe = "import sys; print(*(f'{s.encoding} {s.errors}' for s in (sys.stdout, sys.stderr)))"
    words = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    return (words[0], words[1]), (words[2], words[3])


def _text(f: IO[bytes]) -> str:
    """As ``subprocess.run(text=True)`` decodes a pipe: the locale's encoding, universal
    newlines."""
    f.seek(0)
    return io.TextIOWrapper(
        io.BytesIO(f.read()), encoding=locale.getpreferredencoding(False)
    ).read()


@functools.cache
def _start_libuv() -> None:
    """libuv opens a pipe with its first loop (for signals) and keeps it for the life of the
    process; the first call that runs a soak's loop would be blamed for it."""
    with contextlib.suppress(ImportError):
        import asyncio

        import uvloop

        uvloop.run(asyncio.sleep(0))


@contextlib.contextmanager
def _as_started(argv: list[str], env: dict[str, str], cwd: Path) -> Iterator[None]:
    import structlog

    import mm_sim

    saved = dict(os.environ), os.getcwd(), sys.argv, structlog.get_config()
    try:
        os.environ.update(env)
        os.chdir(cwd)
        sys.argv = [str(Path(mm_sim.__file__).with_name("__main__.py")), *argv]
        structlog.reset_defaults()
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved[0])
        os.chdir(saved[1])
        sys.argv = saved[2]
        structlog.configure(**saved[3])


class _Hung(BaseException):
    """Not an Exception: ``main``'s last-resort handler would report it as a bug (exit 70)."""


@contextlib.contextmanager
def _hang_guard(timeout: float, argv: tuple[str, ...]) -> Iterator[None]:
    """``mm``'s timeout: a call that hangs fails its test instead of the whole session."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise _Hung

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield
    except _Hung:
        pytest.fail(f"mm_sim {' '.join(argv)}: still running after {timeout} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _exit_status(main: Callable[[list[str]], int], argv: list[str]) -> int:
    """The exit status of ``raise SystemExit(main())`` (``__main__``), as the interpreter has it."""
    try:
        return main(argv)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGCHLD)


def _process_state() -> dict[str, Any]:
    """What a call must leave as it found it. Imported modules, numba's compiled kernels and the
    loggers modules create as they are imported may stay: a subprocess has them by its start."""
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    return {
        "environment": dict(os.environ),
        "working directory": os.getcwd(),
        "signal handlers": {s.name: signal.getsignal(s) for s in _SIGNALS} | {"wakeup": wakeup},
        "threads": {f"{t.name} ({t.ident})" for t in threading.enumerate()},
        "child processes": _children(),
        "open files": _open_files(),
        "logging handlers": {
            f"{lg.name}: {h!r}"
            for lg in loggers
            if isinstance(lg, logging.Logger)
            for h in lg.handlers
        },
    }


def _left_behind(before: dict[str, Any]) -> dict[str, Any]:
    """What differs from ``before``: of a set, what is new (what went is no leak); of the
    environment, the names alone (a failure's message would print its values)."""
    after = _process_state()
    out: dict[str, Any] = {}
    for key, was in before.items():
        now = after[key]
        if isinstance(was, set):
            changed: Any = now - was
        elif isinstance(was, dict):
            names = {k for k in was.keys() | now.keys() if was.get(k) != now.get(k)}
            changed = (
                names if key == "environment" else {k: (was.get(k), now.get(k)) for k in names}
            )
        else:
            changed = (was, now) if now != was else None
        if changed:
            out[key] = changed
    return out


def _open_files() -> set[str]:
    """Open files, but an installed package's own (matplotlib keeps the fonts it has drawn
    with open for the life of the process, as numba keeps its kernels loaded)."""
    out: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in Path("/proc/self/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if not target.startswith(_INSTALLED):
                    out.add(f"{fd.name} -> {target}")
    return out


_INSTALLED = tuple(os.path.join(p, "") for p in {sys.prefix, sys.base_prefix})


def _children() -> set[str]:
    out: set[str] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{os.getpid()}/task").iterdir():
            with contextlib.suppress(OSError):
                out |= set((task / "children").read_text().split())
    return out


def snapshot(*roots: Path) -> dict[str, bytes]:
    """Every file under ``roots`` (or the file itself), by path: what must not change."""
    out: dict[str, bytes] = {}
    for root in roots:
        if root.is_file():
            out[str(root)] = root.read_bytes()
        elif root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.is_file() and p.name != ".lock":
                    out[str(p)] = p.read_bytes()
    return out


def assert_refused(r: subprocess.CompletedProcess[str], culprit: str, code: int = 2) -> None:
    both = r.stdout + r.stderr
    assert "Traceback" not in both, both[-3000:]
    assert r.returncode == code, (r.returncode, both[-3000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("mm_sim")]
    assert len(lines) == 1, r.stderr[-3000:]
    assert culprit in lines[0], (culprit, lines[0])


def copy_feed(feed: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(feed, dst / feed.name)
    shutil.copy(feed.with_suffix(".json"), dst / feed.with_suffix(".json").name)
    return dst / feed.name


def rewrite_feed(feed: Path, dst: Path, change: Callable[[np.ndarray], np.ndarray]) -> Path:
    from mm_sim.events import open_feed, write_feed

    f = open_feed(feed)
    return write_feed(dst / "bad.npy", change(np.array(f.events)), f.instrument)


def copy_run(r: Path, t: Path) -> Path:
    dst = t / "run"
    shutil.copytree(r, dst)
    return dst
