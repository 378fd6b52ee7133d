"""Process-wide settings of npconv: the workspace limit and the number of worker threads.

The workspace limit bounds the temporary memory an algorithm allocates beyond its inputs, its
output and one padded copy of its input (window matrices, Winograd and FFT transforms, per-chunk
products). Algorithms split their work into chunks over the batch, or over output rows of one
image, so that every worker's buffers fit in its share of the limit. Settings apply globally
(`set_config`), inside a `with config(...)` block (this thread and context only) or to one call
(the `workspace=` keyword of every convolution op), the narrowest one winning.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from dataclasses import dataclass, replace

from npconv import _args

DEFAULT_WORKSPACE = 256 * 2**20
"""Default workspace limit in bytes (256 MiB)."""


@dataclass(frozen=True)
class Settings:
    """workspace: bytes of temporaries allowed; threads: worker threads (None: every core)."""

    workspace: int = DEFAULT_WORKSPACE
    threads: int | None = None


_global = Settings()
_local: contextvars.ContextVar[Settings | None] = contextvars.ContextVar("npconv", default=None)


def _check(workspace, threads) -> None:
    if workspace is not None:
        if not _args.is_int(workspace):
            raise TypeError(f"`workspace` must be an int (bytes); got {workspace!r}")
        if workspace < 1:
            raise ValueError(f"`workspace` must be >= 1 byte; got {workspace}")
    if threads is not None:
        if not _args.is_int(threads):
            raise TypeError(f"`threads` must be an int or None; got {threads!r}")
        if threads < 1:
            raise ValueError(f"`threads` must be >= 1; got {threads}")


def current() -> Settings:
    """The settings in force here: a `config` block's, else the global ones."""
    local = _local.get()
    return _global if local is None else local


def get_config() -> dict:
    """The settings in force, as a dict {"workspace": bytes, "threads": int or None}.

    Examples
    --------
    >>> import npconv
    >>> npconv.get_config()["workspace"] == 256 * 2**20
    True
    """
    s = current()
    return {"workspace": s.workspace, "threads": s.threads}


def set_config(*, workspace: int | None = None, threads: int | None = None) -> dict:
    """Change the global settings; arguments left as None keep their value.

    Parameters
    ----------
    workspace : int, optional
        Bytes of temporary memory one convolution may allocate (default 256 MiB).
    threads : int, optional
        Worker threads for chunked algorithms (default: every core the process may use).

    Returns
    -------
    dict
        The previous global settings, so that ``set_config(**old)`` restores them.
    """
    global _global
    _check(workspace, threads)
    old = {"workspace": _global.workspace, "threads": _global.threads}
    _global = replace(
        _global,
        workspace=_global.workspace if workspace is None else int(workspace),
        threads=_global.threads if threads is None else int(threads),
    )
    return old


@contextlib.contextmanager
def config(*, workspace: int | None = None, threads: int | None = None):
    """Context manager: settings for the calls made inside the block (this context only).

    Examples
    --------
    >>> import numpy as np, npconv
    >>> with npconv.config(workspace=16 * 2**20):     # 16 MiB of temporaries at most
    ...     y = npconv.conv(np.ones((2, 8, 8, 3)), np.ones((3, 3, 3, 4)))
    >>> y.shape
    (2, 6, 6, 4)
    """
    _check(workspace, threads)
    base = current()
    token = _local.set(replace(
        base,
        workspace=base.workspace if workspace is None else int(workspace),
        threads=base.threads if threads is None else int(threads),
    ))
    try:
        yield
    finally:
        _local.reset(token)


def resolve(workspace=None) -> Settings:
    """The settings for one call: `workspace` (already checked) overrides the one in force."""
    s = current()
    threads = s.threads or cpu_count()
    if workspace is None:
        return replace(s, threads=threads)
    return Settings(workspace=int(workspace), threads=threads)


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                                       # not on Linux
        return os.cpu_count() or 1


check = _check
