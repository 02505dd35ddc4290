"""Persistent compilation cache: compiled fits survive the process.

A fresh Python process otherwise recompiles every XLA program a fit needs (seconds).  JAX can
store compiled executables on disk and reload them by a hash of the program; bayesglmm turns
that on, by default, for its own computations:

* Where: ``$BAYESGLMM_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/bayesglmm``, else
  ``~/.cache/bayesglmm``.  ``BAYESGLMM_CACHE_DIR=0`` disables the cache.
* Size: at most ``$BAYESGLMM_CACHE_MAX_BYTES`` (default 1 GiB).  The cap is enforced when a
  process first enables the cache, by deleting the least recently used entries; one process may
  exceed it by what it writes itself.
* Clearing: :func:`clear_cache` (``bayesglmm.clear_cache()``) or ``python -m bayesglmm cache
  clear``; ``python -m bayesglmm cache info`` shows where it is and how large.
* Unusable directory (read-only home, a path under a regular file): no cache, no error, one
  debug-level log record on the ``bayesglmm`` logger.

JAX's global configuration is left as the user set it.  The cache options
(``jax_compilation_cache_dir``, ``jax_persistent_cache_min_compile_time_secs``,
``jax_persistent_cache_min_entry_size_bytes``) are set thread-locally, only while bayesglmm
computes (:func:`cache_scope`, entered by ``_precision.precision``), exactly as 64-bit types are.
If the user configured JAX's cache themselves (``jax_compilation_cache_dir`` or
``JAX_COMPILATION_CACHE_DIR`` set, or ``jax_enable_compilation_cache`` false) bayesglmm does
nothing and its programs go wherever the user's settings send them.

JAX opens its on-disk cache once per process, at the first compilation that finds a cache
directory configured.  Hence two caveats: configure JAX's own cache before the first bayesglmm
fit (afterwards JAX keeps using bayesglmm's directory), and once bayesglmm's fit has opened it,
programs compiled outside bayesglmm that take longer than the user's
``jax_persistent_cache_min_compile_time_secs`` (JAX's default 1 s) are also stored there.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

__all__ = ["cache_dir", "cache_info", "cache_scope", "clear_cache", "max_bytes", "traced_dir"]

logger = logging.getLogger("bayesglmm")

ENV_DIR = "BAYESGLMM_CACHE_DIR"
ENV_MAX_BYTES = "BAYESGLMM_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 1 << 30
_OFF = {"0", "off", "false", "no", "none"}

# Store every program: a cache read (about a millisecond) beats even a small compilation, and
# bayesglmm's programs are small-to-medium.  JAX's default (1 s) would skip most of them.
_MIN_COMPILE_TIME_S = 0.0
_MIN_ENTRY_BYTES = -1  # -1: no size threshold, and JAX does not override it at initialisation

# Files JAX's LRU file cache writes: "<key>-cache" (executable) and, with eviction, "<key>-atime".
_CACHE_SUFFIX = "-cache"
_ATIME_SUFFIX = "-atime"
_TRACED_SUFFIX = "-traced"  # bayesglmm._export's traced programs, pruned and cleared alike
_XLA_SUBDIRS = ("xla_gpu_per_fusion_autotune_cache_dir", "xla_gpu_kernel_cache_file")

_lock = threading.Lock()
_settings: tuple | None = None  # ((jax config State, value), ...) once resolved; () when off


def cache_dir() -> Path | None:
    """The configured cache directory (from the environment), or ``None`` when disabled.

    Does not check that the directory is usable; :func:`cache_info` does.
    """
    env = os.environ.get(ENV_DIR, "").strip()
    if env.lower() in _OFF:
        return None
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(base).expanduser() if base else Path.home() / ".cache"
    return root / "bayesglmm"


def max_bytes() -> int:
    """The size cap in bytes: ``$BAYESGLMM_CACHE_MAX_BYTES`` (``-1`` = no cap), default 1 GiB."""
    env = os.environ.get(ENV_MAX_BYTES, "").strip()
    if not env:
        return DEFAULT_MAX_BYTES
    try:
        return int(float(env))
    except ValueError:
        logger.debug("ignoring %s=%r (not a number); using %d", ENV_MAX_BYTES, env,
                     DEFAULT_MAX_BYTES)
        return DEFAULT_MAX_BYTES


def _writable(path: Path, create: bool = True) -> bool:
    """Create ``path`` if needed and check a file can be created in it (works for root too).

    With ``create=False`` a missing ``path`` is judged by its nearest existing ancestor.
    """
    if not create and not path.exists():
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        return parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError:
        return False
    return True


def _entries(path: Path) -> list[tuple[float, int, Path]]:
    """``(last use, size, file)`` of each cached executable in ``path``."""
    out = []
    with os.scandir(path) as it:
        for e in it:
            if (e.name.endswith((_CACHE_SUFFIX, _TRACED_SUFFIX))
                    and e.is_file(follow_symlinks=False)):
                st = e.stat(follow_symlinks=False)
                # last use: atime where the filesystem keeps it (relatime: at least daily)
                out.append((max(st.st_atime, st.st_mtime), st.st_size, Path(e.path)))
    return out


def _remove_entry(file: Path) -> None:
    if file.name.endswith(_TRACED_SUFFIX):
        with contextlib.suppress(FileNotFoundError):
            file.unlink()
        return
    key = file.name[: -len(_CACHE_SUFFIX)]
    for p in (file, file.with_name(key + _ATIME_SUFFIX)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _prune(path: Path, cap: int) -> int:
    """Delete least recently used entries until the total size is at most ``cap``; count them."""
    if cap < 0:
        return 0
    entries = sorted(_entries(path))
    total = sum(size for _, size, _ in entries)
    removed = 0
    for _, size, file in entries:
        if total <= cap:
            break
        _remove_entry(file)
        total -= size
        removed += 1
    return removed


def _user_configured(jcfg) -> bool:
    """True if the user set up (or switched off) JAX's persistent cache themselves."""
    return bool(os.environ.get("JAX_COMPILATION_CACHE_DIR")
                or jcfg.compilation_cache_dir.value
                or not jcfg.enable_compilation_cache.value)


def _resolve() -> tuple:
    """Decide once per process which JAX options :func:`cache_scope` sets (``()``: none)."""
    path = cache_dir()
    if path is None:
        logger.debug("compilation cache disabled by %s", ENV_DIR)
        return ()
    try:
        from jax._src import config as jcfg

        states = (jcfg.compilation_cache_dir, jcfg.persistent_cache_min_compile_time_secs,
                  jcfg.persistent_cache_min_entry_size_bytes)
        if _user_configured(jcfg):
            return ()
    except (ImportError, AttributeError):  # a JAX without these options: run uncached
        logger.debug("compilation cache unavailable in this JAX version")
        return ()
    cap = max_bytes()
    if cap == 0 or not _writable(path):
        logger.debug("compilation cache disabled: %s is not writable (or the cap is 0)", path)
        return ()
    try:
        _prune(path, cap)
    except OSError as exc:
        logger.debug("compilation cache: pruning %s failed (%s)", path, exc)
    return ((states[0], str(path)), (states[1], _MIN_COMPILE_TIME_S),
            (states[2], _MIN_ENTRY_BYTES))


def traced_dir() -> Path | None:
    """Where :mod:`bayesglmm._export` stores traced programs: bayesglmm's cache directory
    once a fit has enabled it (:func:`cache_scope`), else None (off, unusable, or the user's
    own JAX cache configured)."""
    settings = _settings
    return _as_path(settings[0][1]) if settings else None


@functools.lru_cache(maxsize=4)
def _as_path(folder: str) -> Path:
    return Path(folder)  # (called on every persistent_jit call: pathlib parsing costs ~15 µs)


@contextlib.contextmanager
def cache_scope():
    """Enable bayesglmm's compilation cache, thread-locally, for the enclosed JAX code.

    The decision (directory, user's own configuration, writability) is made on first use and
    kept for the process.
    """
    global _settings
    if _settings is None:
        with _lock:
            if _settings is None:
                _settings = _resolve()
    with contextlib.ExitStack() as stack:
        for state, value in _settings:
            stack.enter_context(state(value))
        yield


def cache_info() -> dict:
    """Where the cache is, whether it is used, and how large it is.

    Returns
    -------
    dict
        ``path`` (str or None), ``enabled`` (bool), ``reason`` (why not, or ``""``),
        ``entries`` (int), ``bytes`` (int), ``max_bytes`` (int, ``-1`` = no cap).
    """
    path = cache_dir()
    info = {"path": None if path is None else str(path), "enabled": False, "reason": "",
            "entries": 0, "bytes": 0, "max_bytes": max_bytes()}
    if path is None:
        info["reason"] = f"disabled by {ENV_DIR}"
        return info
    jax_config = sys.modules.get("jax._src.config")  # only if JAX is already imported
    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or (
            jax_config is not None and _user_configured(jax_config)):
        info["reason"] = "JAX's own compilation cache is configured and used"
    elif info["max_bytes"] == 0:
        info["reason"] = f"{ENV_MAX_BYTES}=0"
    elif not _writable(path, create=False):
        info["reason"] = "directory not writable"
    else:
        info["enabled"] = True
    if path.is_dir():
        with contextlib.suppress(OSError):
            entries = _entries(path)
            info["entries"] = len(entries)
            info["bytes"] = sum(size for _, size, _ in entries)
    return info


def clear_cache() -> int:
    """Delete every entry of bayesglmm's compilation cache; return how many were deleted.

    Only files JAX's cache writes (``*-cache``, ``*-atime``, its lock file and XLA's GPU cache
    folders) and bayesglmm's traced programs (``*-traced``, :mod:`bayesglmm._export`) are
    removed, so a ``BAYESGLMM_CACHE_DIR`` pointing at a shared folder loses nothing
    else.  A JAX cache the user configured themselves is not touched.

    Examples
    --------
    >>> import bayesglmm
    >>> n_removed = bayesglmm.clear_cache()
    """
    path = cache_dir()
    if path is None or not path.is_dir():
        return 0
    entries = _entries(path)
    for _, _, file in entries:
        _remove_entry(file)
    with contextlib.suppress(FileNotFoundError):
        (path / ".lockfile").unlink()
    for sub in _XLA_SUBDIRS:
        shutil.rmtree(path / sub, ignore_errors=True)
    return len(entries)
