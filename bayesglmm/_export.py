"""Traced programs that survive the process: ``jax.export`` beside the compilation cache.

JAX's persistent compilation cache (:mod:`bayesglmm._cache`) skips XLA's compilation, but
every new process still traces and lowers each program in Python before it can look the
executable up: for a Newton fit with nested autodiff that is about half a second, most of
what a warm script waits for.  :class:`persistent_jit` is ``jax.jit`` that also stores the
*traced* program (a ``jax.export.Exported``: StableHLO bytecode and its signature) in the cache
directory; a later process loads it instead of tracing (milliseconds), and its compilation
then hits the executable cache as before.

The stored program is looked up by a fingerprint of everything that determines it:

* the function: its code (bytecode, constants, names), and recursively what it closes over
  (closure cells, defaults, ``functools.partial`` arguments, bound ``self``), dataclasses,
  NamedTuples, arrays (by value), numbers, strings; functions must come from bayesglmm or JAX
  (the module-level names they read are then covered by the next two items);
* the arguments' tree structure, shapes, dtypes and weak types;
* bayesglmm's source (a hash of every module's text, so an edited checkout never reuses a
  stale program), the JAX and jaxlib versions, the backend, 64-bit mode, matrix-product
  precision and the compiler options.

Whatever cannot be fingerprinted (an unknown object in a closure), sharded or multi-device
arguments, host callbacks (the progress reports) or a program ``jax.export`` refuses run as a
plain ``jax.jit`` (a refused program is remembered on disk, so later processes do not try again),
as does everything when bayesglmm's cache is off (``BAYESGLMM_CACHE_DIR=0``, a read-only
directory, or the user's own JAX cache configured).
A stored program that fails to load is ignored and rewritten.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import hashlib
import inspect
import logging
import os
import pickle
import types
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

__all__ = ["fingerprint", "persistent_jit"]

logger = logging.getLogger("bayesglmm")

LOADED_PREFIX = "exported_"  # jit name of the wrapper that calls a stored program
UNEXPORTABLE = "unexportable"  # stored for a program jax.export refuses (host callbacks)
SUFFIX = "-traced"  # next to JAX's "<key>-cache" files (bayesglmm._cache prunes and clears both)
_FORMAT = 1  # bump when the stored layout changes
# modules whose functions may be fingerprinted by code and closure alone: the globals they read
# are module-level names covered by the source hash (bayesglmm) or the version (jax)
TRUSTED: tuple[str, ...] = ("bayesglmm.", "jax.")


class Opaque(TypeError):
    """An object :func:`fingerprint` cannot describe by value."""


_SOURCE: str | None = None


def source_hash() -> str:
    """A hash of every bayesglmm module's text (computed once per process)."""
    global _SOURCE
    if _SOURCE is None:
        h = hashlib.sha256()
        root = Path(__file__).resolve().parent
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
        _SOURCE = h.hexdigest()
    return _SOURCE


def _feed(h, obj, seen: dict) -> None:
    """Hash ``obj`` by value into ``h``; raise :class:`Opaque` for what has no stable value."""
    oid = id(obj)
    if oid in seen:  # a cycle or a repeat: refer to its first position
        h.update(b"@" + str(seen[oid]).encode())
        return
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
        return
    seen[oid] = len(seen)
    if isinstance(obj, np.dtype):
        h.update(f"dtype:{obj.str};".encode())
    elif isinstance(obj, (np.ndarray, np.generic)):
        a = np.asarray(obj)
        if a.dtype == object:
            raise Opaque("object array")
        h.update(f"nd:{a.dtype.str}:{a.shape};".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    elif isinstance(obj, jax.Array):
        if isinstance(obj, jax.core.Tracer):
            raise Opaque("tracer")
        _feed(h, np.asarray(obj), seen)
    elif isinstance(obj, enum.Enum):
        h.update(f"enum:{type(obj).__qualname__}.{obj.name};".encode())
    elif isinstance(obj, type):
        h.update(f"type:{obj.__module__}.{obj.__qualname__};".encode())
    elif isinstance(obj, types.ModuleType):
        h.update(f"module:{obj.__name__};".encode())
    elif isinstance(obj, tuple) and hasattr(obj, "_fields"):  # NamedTuple
        h.update(f"nt:{type(obj).__module__}.{type(obj).__qualname__}(".encode())
        for item in obj:
            _feed(h, item, seen)
        h.update(b")")
    elif isinstance(obj, (tuple, list, frozenset, set)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        h.update(f"{type(obj).__name__}(".encode())
        for item in items:
            _feed(h, item, seen)
        h.update(b")")
    elif isinstance(obj, dict):
        h.update(b"dict(")
        for k in sorted(obj, key=repr):
            _feed(h, k, seen)
            _feed(h, obj[k], seen)
        h.update(b")")
    elif isinstance(obj, functools.partial):
        h.update(b"partial(")
        for item in (obj.func, obj.args, obj.keywords):
            _feed(h, item, seen)
        h.update(b")")
    elif isinstance(obj, types.MethodType):
        h.update(b"method(")
        _feed(h, obj.__func__, seen)
        _feed(h, obj.__self__, seen)
        h.update(b")")
    elif isinstance(obj, types.FunctionType):
        _feed_function(h, obj, seen)
    elif isinstance(obj, (jax.custom_jvp, jax.custom_vjp)):  # the function and its rules
        h.update(f"{type(obj).__name__}(".encode())
        for name in ("fun", "jvp", "fwd", "bwd", "nondiff_argnums", "symbolic_zeros",
                     "optimize_remat"):
            _feed(h, getattr(obj, name, None), seen)
        h.update(b")")
    elif isinstance(obj, types.CodeType):
        h.update(f"code:{obj.co_qualname if hasattr(obj, 'co_qualname') else obj.co_name};"
                 .encode())
        h.update(obj.co_code)
        _feed(h, obj.co_names, seen)
        _feed(h, obj.co_varnames, seen)
        _feed(h, tuple(c for c in obj.co_consts), seen)
    elif dataclasses.is_dataclass(obj):
        h.update(f"dc:{type(obj).__module__}.{type(obj).__qualname__}(".encode())
        for f in dataclasses.fields(obj):
            _feed(h, f.name, seen)
            _feed(h, getattr(obj, f.name), seen)
        h.update(b")")
    elif callable(obj) and (getattr(obj, "__module__", None) or "").startswith(TRUSTED):
        # module-level callables (jax.custom_jvp objects, jitted functions) named by where
        # they live: their code is covered by the source hash and the JAX version
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        if name is None or "<locals>" in name:
            raise Opaque(f"local callable {obj!r}")
        h.update(f"named:{obj.__module__}.{name};".encode())
    else:
        raise Opaque(f"{type(obj).__qualname__}")


def _feed_function(h, fn: types.FunctionType, seen: dict) -> None:
    h.update(f"fn:{fn.__module__}.{fn.__qualname__}(".encode())
    _feed(h, fn.__code__, seen)
    _feed(h, fn.__defaults__, seen)
    _feed(h, fn.__kwdefaults__, seen)
    cells = fn.__closure__ or ()
    try:
        _feed(h, tuple(c.cell_contents for c in cells), seen)
    except ValueError as err:  # an empty cell (a name assigned later)
        raise Opaque("empty closure cell") from err
    if not fn.__module__.startswith(TRUSTED):  # the globals it reads are not fingerprinted
        raise Opaque(f"function {fn.__module__}.{fn.__qualname__} outside bayesglmm")
    h.update(b")")


def fingerprint(*objs) -> str:
    """A hex digest of ``objs`` by value (see the module docstring); raises :class:`Opaque`."""
    h = hashlib.sha256()
    _feed(h, objs, {})
    return h.hexdigest()


def _environment() -> tuple:
    """What else determines a traced program: versions, backend and JAX's global modes."""
    import jaxlib

    return (_FORMAT, source_hash(), jax.__version__, jaxlib.__version__, jax.default_backend(),
            bool(jax.config.jax_enable_x64), str(jax.config.jax_default_matmul_precision),
            str(jax.config.jax_numpy_rank_promotion))


def _traced(tree) -> bool:
    """Whether any leaf of ``tree`` is a tracer (the call is under another trace)."""
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


_ARRAY_IMPL: list = [None]  # jaxlib's concrete array class, once an argument has shown it


def _leaf_spec(x) -> tuple:
    """What jax.jit's cache distinguishes of an argument: shape, dtype, weak type (a numpy
    array and a JAX array alike; a Python float as a weakly typed scalar)."""
    kind = type(x)
    if kind is np.ndarray:  # the common leaves first, without jax.typeof (~2 µs a leaf)
        return (x.shape, _canonical(x.dtype), False)
    if kind is _ARRAY_IMPL[0] and len(x.sharding.device_set) == 1:
        return (x.shape, x.dtype.str, bool(x.weak_type))
    if isinstance(x, jax.Array):
        if isinstance(x, jax.core.Tracer) or len(x.sharding.device_set) != 1:
            raise Opaque("traced or sharded argument")
        _ARRAY_IMPL[0] = kind
    elif not isinstance(x, (np.ndarray, np.generic, bool, int, float, complex)):
        raise Opaque(type(x).__qualname__)
    aval = jax.typeof(x)
    return (aval.shape, np.dtype(aval.dtype).str, bool(aval.weak_type))


@functools.lru_cache(maxsize=64)
def _canonical_str(dtype: np.dtype, x64: bool) -> str:
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype)).str


def _canonical(dtype: np.dtype) -> str:
    """``dtype`` as JAX takes a numpy array of it (64-bit types narrowed without x64)."""
    return _canonical_str(dtype, bool(jax.config.jax_enable_x64))


def _device(leaves) -> jax.Device:
    """The one device the arguments live on (the default device for host arguments)."""
    devices = {d for x in leaves if isinstance(x, jax.Array) for d in x.sharding.device_set}
    if len(devices) > 1:
        raise Opaque("arguments on several devices")
    if devices:
        return devices.pop()
    default = jax.config.jax_default_device
    return default if isinstance(default, jax.Device) else jax.devices()[0]


_NO_STATIC = fingerprint({})  # (hashed once: most programs have no static arguments)


class persistent_jit:  # noqa: N801 - used like jax.jit
    """``jax.jit(fun, static_argnames=..., compiler_options=...)`` whose traced program is also
    stored on disk.

    Calls behave as the jitted function's (same results: the same StableHLO is compiled);
    static arguments (``static_argnames``, by name or position) are part of the key.
    ``_cache_size()`` counts compiled executables of both routes (tests pin it).  Called
    under another transformation (``jax.vmap``, ``jax.eval_shape``, inside another jit: any
    argument a tracer), it is the plain jit without ``compiler_options``: the enclosing
    program is what XLA compiles, and jax 0.11 refuses compiler options on a nested jit
    (``ValueError``: seen on a GPU, where every program names one, in ``fit_many``'s vmapped
    Laplace fits).
    """

    def __init__(self, fun: Callable, *, static_argnames: tuple[str, ...] = (),
                 compiler_options: dict | None = None):
        self._fun = fun
        self._static = tuple(static_argnames)
        self._options = compiler_options
        self._jit = jax.jit(fun, static_argnames=self._static or None,
                            compiler_options=compiler_options)
        # under another trace: the enclosing program's options apply
        self._nested = (jax.jit(fun, static_argnames=self._static or None)
                        if compiler_options else self._jit)
        self._signature = inspect.signature(fun) if self._static else None
        self._fn_key: str | None = None
        self._plain = False  # the function cannot be fingerprinted: always the plain jit
        self._calls: dict = {}  # signature -> jitted call of the deserialized program
        functools.update_wrapper(self, fun)

    def _cache_size(self) -> int:
        return self._jit._cache_size() + sum(c._cache_size() for c in self._calls.values()
                                             if c is not None)

    def __call__(self, *args, **kwargs):
        from . import _cache

        if self._nested is not self._jit and _traced((args, kwargs)):
            return self._nested(*args, **kwargs)
        folder = _cache.traced_dir()
        if folder is None or self._plain:
            return self._jit(*args, **kwargs)
        static: dict = {}
        names: tuple = ()
        if self._signature is not None:  # dynamic arguments positional, static ones by name
            bound = self._signature.bind(*args, **kwargs)
            bound.apply_defaults()
            static = {k: v for k, v in bound.arguments.items() if k in self._static}
            names = tuple(k for k in bound.arguments if k not in self._static)
            args, kwargs = tuple(bound.arguments[k] for k in names), {}
        elif kwargs:
            return self._jit(*args, **kwargs)
        try:
            if self._fn_key is None:
                self._fn_key = fingerprint(self._fun, self._static, self._options,
                                           _environment())
            leaves, tree = jax.tree_util.tree_flatten(args)
            sig = (fingerprint(static) if static else _NO_STATIC, str(tree),
                   tuple(_leaf_spec(x) for x in leaves))
            device = _device(leaves)
        except Opaque as err:
            logger.debug("persistent_jit(%s): plain jit (%s)", self.__name__, err)
            self._plain = self._fn_key is None
            return self._plain_call(args, names, static)
        call = self._calls.get((sig, device), False)
        if call is False:
            fun = self._jit if not static else _bind(self._fun, names, static, self._options)
            call = self._calls[sig, device] = self._load(folder, sig, fun, args, device)
        if call is None:
            return self._plain_call(args, names, static)
        return call(*args)

    def _plain_call(self, args: tuple, names: tuple, static: dict):
        if not names:
            return self._jit(*args, **static)
        return self._jit(**dict(zip(names, args)), **static)

    def _load(self, folder: Path, sig: tuple, fun: Callable, args, device) -> Callable | None:
        """The jitted call of the stored program for ``sig``, exporting it first if needed."""
        key = hashlib.sha256(f"{self._fn_key}|{sig!r}".encode()).hexdigest()[:40]
        path = folder / f"{key}{SUFFIX}"
        exp = None
        if path.is_file():
            try:
                exp = pickle.loads(path.read_bytes())
            except Exception as err:  # noqa: BLE001 - a damaged or foreign entry: re-export
                logger.debug("persistent_jit(%s): ignoring %s (%s)", self.__name__, path, err)
                exp = None
            if exp == UNEXPORTABLE:  # an earlier process found it cannot be stored
                return None
        if exp is None:
            try:
                exp = jax.export.export(fun)(*args)
                # the Exported itself, pickled (its serialize() needs the optional flatbuffers
                # package); _get_vjp is a closure, and only needed to differentiate the call
                blob = pickle.dumps(dataclasses.replace(exp, _get_vjp=None))
            except Exception as err:  # noqa: BLE001 - callbacks, custom calls: plain jit
                logger.debug("persistent_jit(%s): not exportable (%s)", self.__name__, err)
                _write(path, pickle.dumps(UNEXPORTABLE))  # later processes: no second attempt
                return None
            _write(path, blob)

        def call(*a):
            return exp.call(*a)
        # traced (cheaply: one call of the stored program) under a name tests can tell apart
        call.__name__ = call.__qualname__ = f"{LOADED_PREFIX}{self.__name__}"
        # placed explicitly: a stored program's outputs are committed to their device, and
        # without shardings a later call with them (rather than host arrays) would compile
        # the program a second time
        place = jax.sharding.SingleDeviceSharding(device)
        return jax.jit(call, in_shardings=place, out_shardings=place,
                       compiler_options=self._options)


def _bind(fun: Callable, names: tuple, static: dict, options) -> Callable:
    """``fun`` with its static arguments fixed, the others positional in ``names`` order."""
    def bound(*dyn):
        return fun(**dict(zip(names, dyn)), **static)
    bound.__name__ = bound.__qualname__ = getattr(fun, "__name__", "bound")
    return jax.jit(bound, compiler_options=options)


def _write(path: Path, data: bytes) -> None:
    """Write atomically (rename); an unwritable folder only costs the speed-up."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as err:
        logger.debug("persistent_jit: cannot write %s (%s)", path, err)
        with contextlib.suppress(OSError):
            tmp.unlink()
