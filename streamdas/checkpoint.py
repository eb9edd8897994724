"""Checkpoints: the one home of serialization (plain data in, plain data out, atomic files).

A checkpoint file is a fixed 56-byte header -- :data:`MAGIC`, the length of the body and its
SHA-256 -- followed by the body, a ``torch.save`` of plain data and tensors. It is written to a
temporary file in the target's folder, flushed and fsynced, then renamed over the target, so a
reader sees the old file or the new one and never a torn one.

Reading is bounded and checked before anything is built from the file (:func:`load`):

1. the file's size is at most :attr:`Limits.max_bytes`, read once through one descriptor;
2. the body's SHA-256 matches the header (torch's zip reader checks no CRC: without this, a
   flipped bit in tensor data would load silently). Files written before the header -- a bare
   torch zip -- are still accepted, with every other check below (the zip's own CRC-32s catch a
   flipped bit in an entry's data, not in its metadata); the next save adds the header;
3. the zip holds one pickle of at most :attr:`Limits.max_pickle_bytes` and uncompressed
   (stored) entries only, each passing its CRC-32, so no entry decompresses beyond the file;
4. the pickle names only a handful of globals (:data:`PICKLE_GLOBALS`: rebuilding dense
   tensors from the storages in the file) -- no sparse, meta, quantized or subclassed tensor,
   nothing else -- and is then read with ``torch.load(weights_only=True)``, which never runs
   code from the file;
5. every value in it is plain data or a dense, contiguous CPU tensor of a plain dtype, within
   :attr:`Limits.max_depth` and :attr:`Limits.max_nodes`; a tensor's memory is then its
   storage's, which is bytes of the file.

The estimators and the trainer then check every field against their own shapes, dtypes and
ranges (:func:`check_tensor`, :func:`check_params`, the rules below) before building a network
(whose size, grown once more, must stay within :attr:`Limits.max_parameters`), and
:func:`load_estimator` finally runs a prediction and one optimizer step on a copy of the model
(:func:`self_check`), so a model that loads also works.

Nothing in a file is imported, looked up or called by name: the estimator classes are a fixed
table (:data:`ESTIMATORS`, filled by :func:`checkpointable`), and so are the drift detectors
(:data:`DRIFT_DETECTORS`), whose parameters are range-checked per class
(:data:`DETECTOR_PARAMS`). **Every** failure to load -- a missing, truncated, corrupt,
incompatible or hostile file, a panic in an extension module included -- raises
:class:`CheckpointError` and nothing else; the object being loaded into is never half-changed,
because loading builds a new object and only returns it once everything fitted.

The public surface: :func:`save` / :func:`load` (files), :func:`dumps` / :func:`loads` (the
same bytes in memory), :func:`save_estimator` /
:func:`load_estimator` (an estimator with its architecture, weights and optimizer),
:func:`estimator_to_state` / :func:`estimator_from_state` (an estimator to plain data and back,
no file), :func:`detector_to_state` / :func:`detector_from_state`, :func:`self_check`,
:func:`remove_stale_temp_files`, and the validators (:func:`plain`, :func:`plain_tree`,
:func:`require`, :func:`check_tensor`, :func:`check_params` with its rules) the estimators and
the trainer use to read their own states. This module imports nothing else from streamdas, so
it sits below every module that uses it.
"""

from __future__ import annotations

import copy
import hashlib
import io
import math
import os
import pickletools
import re
import struct
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from river import base, drift

__all__ = [
    "DEFAULT_LIMITS",
    "DETECTOR_PARAMS",
    "DRIFT_DETECTORS",
    "ESTIMATORS",
    "ESTIMATOR_FORMAT",
    "MAGIC",
    "PICKLE_GLOBALS",
    "CheckpointError",
    "Limits",
    "Rule",
    "check_params",
    "check_tensor",
    "checkpointable",
    "choice",
    "detector_from_state",
    "detector_to_state",
    "dumps",
    "estimator_from_state",
    "estimator_params",
    "estimator_to_state",
    "flag",
    "guarded",
    "integer",
    "load",
    "load_estimator",
    "loads",
    "number",
    "plain",
    "plain_tree",
    "remove_stale_temp_files",
    "require",
    "save",
    "save_estimator",
    "self_check",
    "sequence",
    "text",
    "trial_input",
]


class CheckpointError(Exception):
    """A checkpoint could not be read or does not fit what it should restore.

    The only exception :func:`load`, :func:`load_estimator` and :func:`estimator_from_state`
    raise for anything wrong with the file or the data in it.
    """


@dataclass(frozen=True)
class Limits:
    """Bounds on what a checkpoint may make the reader read or allocate.

    Parameters
    ----------
    max_bytes
        Largest file read (checked before reading it).
    max_pickle_bytes
        Largest pickle inside the file: plain data (lists, names, history) costs up to a few
        tens of times its pickled size in memory, tensors are not in the pickle.
    max_nodes
        Values (containers, scalars, tensors) visited in a payload, shared ones counted at
        every visit.
    max_depth
        Nesting of containers.
    max_units
        Widest hidden layer a checkpoint may declare (any ``max_units`` it sets included).
    max_parameters
        Parameters of the network a checkpoint describes after one more growth by its own
        sizing settings (the network its first learning step may build).

    >>> Limits().max_bytes // 2**20, Limits(max_bytes=2**20).max_bytes
    (256, 1048576)
    """

    max_bytes: int = 256 * 2**20
    max_pickle_bytes: int = 8 * 2**20
    max_nodes: int = 2_000_000
    max_depth: int = 32
    max_units: int = 4096
    max_parameters: int = 16 * 2**20


#: The bounds used when none are given.
DEFAULT_LIMITS = Limits()

#: The first bytes of every checkpoint file (then the body's length and SHA-256).
MAGIC = b"STREAMDAS-CKPT\x00\x01"
_HEADER = struct.Struct(f"<{len(MAGIC)}sQ32s")
_ZIP_MAGIC = b"PK\x03\x04"

#: The only globals a checkpoint's pickle may name: dense tensors rebuilt from storages in
#: the file, and the ordered dicts that torch attaches to them. ``torch.save`` of plain data
#: and tensors writes nothing else.
PICKLE_GLOBALS = frozenset(
    {
        "collections OrderedDict",
        "torch._utils _rebuild_tensor_v2",
        *(f"torch {kind}Storage" for kind in ("Float", "Double", "Long", "Int", "Byte", "Bool")),
    }
)
# Opcodes that build objects other than through REDUCE of an allowed global: never in a torch.save.
_PICKLE_REFUSED = frozenset(
    {
        "STACK_GLOBAL",
        "INST",
        "OBJ",
        "NEWOBJ",
        "NEWOBJ_EX",
        "BUILD",
        "EXT1",
        "EXT2",
        "EXT4",
        "PERSID",
        "BYTEARRAY8",
        "NEXT_BUFFER",
        "READONLY_BUFFER",
        "FROZENSET",
        "EMPTY_SET",
        "ADDITEMS",
    }
)
_DTYPES = frozenset({torch.float32, torch.float64, torch.int64, torch.int32, torch.uint8, torch.bool})
_NOT_CONTAINED = (KeyboardInterrupt, SystemExit, GeneratorExit)


def guarded(fn: Callable[[], Any], where: str) -> Any:
    """Call ``fn()``; turn any failure into a :class:`CheckpointError` naming ``where``.

    "Any" includes ``BaseException`` subclasses that extension modules raise for a native
    panic (pyo3's ``PanicException`` passes every ``except Exception``); only
    ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` go through.

    >>> guarded(lambda: 1 + 1, "sum")
    2
    >>> guarded(lambda: {}["nope"], "lookup")
    Traceback (most recent call last):
    ...
    streamdas.checkpoint.CheckpointError: lookup: KeyError: 'nope'
    """
    try:
        return fn()
    except CheckpointError:
        raise
    except _NOT_CONTAINED:
        raise
    except BaseException as exc:  # native panics are BaseExceptions
        raise CheckpointError(f"{where}: {type(exc).__name__}: {_message(exc)}") from exc


def _message(exc: BaseException, limit: int = 1000) -> str:
    """``str(exc)``, at most ``limit`` characters (a crafted value may fill a message)."""
    try:
        text_ = str(exc)
    except Exception:  # a message that cannot be written out
        return "(no message)"
    return text_ if len(text_) <= limit else text_[: limit - 3] + "..."


# ---------------------------------------------------------------------- files
def save(payload: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file, fsync, rename), with its checksum.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = save({"answer": 42}, d / "x.ckpt")
    >>> load(d / "x.ckpt")
    {'answer': 42}
    >>> (d / "x.ckpt").read_bytes().startswith(MAGIC)
    True
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getbuffer()
    header = _HEADER.pack(MAGIC, len(body), hashlib.sha256(body).digest())
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


_TEMP = re.compile(r"^\..+\.tmp$")


def remove_stale_temp_files(folder: str | os.PathLike[str], older_than_s: float = 600.0) -> list[Path]:
    """Remove the temporary files (``.<name>.<random>.tmp``) that :func:`save` leaves behind
    when it is killed midway, once they are ``older_than_s`` seconds old (a younger one may be
    another writer's save in progress); return the paths removed.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / ".m.ckpt.x1.tmp").write_bytes(b"torn"), (d / "m.ckpt").write_bytes(b"kept")
    >>> [p.name for p in remove_stale_temp_files(d, older_than_s=0)], sorted(p.name for p in d.iterdir())
    (['.m.ckpt.x1.tmp'], ['m.ckpt'])
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not _TEMP.match(entry.name):
            continue
        try:
            if entry.is_file() and now - entry.stat().st_mtime >= older_than_s:
                entry.unlink()
                removed.append(entry)
        except OSError:  # gone already (another instance cleaned it), or not ours to remove
            continue
    return removed


def _read_body(path: Path, limits: Limits) -> bytes:
    """The torch bytes of ``path``: size bounded before reading, checksum verified."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limits.max_bytes:
                raise CheckpointError(
                    f"checkpoint {path} is {size} bytes, more than the "
                    f"{limits.max_bytes} a checkpoint may have"
                )
            head = f.read(_HEADER.size)
            if head.startswith(MAGIC):
                if len(head) < _HEADER.size:
                    raise CheckpointError(f"checkpoint {path} is truncated (in its header)")
                _, length, digest = _HEADER.unpack(head)
                if length != size - _HEADER.size:
                    raise CheckpointError(
                        f"checkpoint {path} is truncated or extended: its header "
                        f"says {length} bytes follow, {size - _HEADER.size} do"
                    )
                body = f.read(length)
                if len(body) != length or f.read(1):
                    raise CheckpointError(f"checkpoint {path} changed while it was read")
                if hashlib.sha256(body).digest() != digest:
                    raise CheckpointError(f"checkpoint {path} is damaged: its SHA-256 does not match")
                return body
            if head.startswith(_ZIP_MAGIC):  # written before the header: checked as below
                body = head + f.read(limits.max_bytes + 1 - len(head))
                if len(body) > limits.max_bytes:
                    raise CheckpointError(f"checkpoint {path} grew while it was read")
                return body
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    raise CheckpointError(f"{path} is not a checkpoint (no {MAGIC[:-2].decode()} header)")


def _read_pickle(body: bytes, path: Path | str, limits: Limits) -> None:
    """Check the zip around the pickle: stored entries within the file, CRCs, one bounded
    pickle that names allowed globals only."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, struct.error) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: not a torch zip ({exc})") from exc
    names = [i.filename for i in infos]
    pickles = [i for i in infos if i.filename.endswith("/data.pkl")]
    _require_file(len(pickles) == 1, path, f"holds {len(pickles)} pickles, not one")
    prefix = pickles[0].filename[: -len("data.pkl")]
    _require_file(len(set(names)) == len(names), path, "names a zip entry twice")
    for info in infos:
        _require_file(
            info.compress_type == zipfile.ZIP_STORED
            and not info.flag_bits & 1
            and info.compress_size == info.file_size
            and info.filename.startswith(prefix),
            path,
            f"zip entry {info.filename!r} is compressed, encrypted or misplaced",
        )
    _require_file(sum(i.file_size for i in infos) <= len(body), path, "declares more data than it holds")
    _require_file(
        pickles[0].file_size <= limits.max_pickle_bytes,
        path,
        f"pickle is {pickles[0].file_size} bytes, more than {limits.max_pickle_bytes}",
    )
    try:
        bad = archive.testzip()
        data = archive.read(pickles[0])
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, struct.error) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    _require_file(bad is None, path, f"zip entry {bad!r} fails its CRC-32 (damaged)")
    try:
        for op, arg, _ in pickletools.genops(data):
            if (op.name == "GLOBAL" and arg not in PICKLE_GLOBALS) or op.name in _PICKLE_REFUSED:
                raise CheckpointError(
                    f"checkpoint {path}: its pickle uses {op.name} {short_repr(arg or '')}, "
                    "which a checkpoint never needs"
                )
    except CheckpointError:
        raise
    except Exception as exc:  # pickletools raises ValueError for malformed opcodes and more
        raise CheckpointError(f"cannot read checkpoint {path}: damaged pickle: {exc}") from exc


def _require_file(condition: bool, path: Path | str, message: str) -> None:
    if not condition:
        raise CheckpointError(f"checkpoint {path}: {message}")


def load(path: str | os.PathLike[str], limits: Limits | None = None) -> dict[str, Any]:
    """Read a checkpoint (see the module's docstring for every check made); raise
    :class:`CheckpointError` on any fault.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "bad.ckpt"
    >>> _ = p.write_bytes(b"not a checkpoint")
    >>> load(p)
    Traceback (most recent call last):
    ...
    streamdas.checkpoint.CheckpointError: .../bad.ckpt is not a checkpoint (no STREAMDAS-CKPT header)
    """
    path = Path(path)
    limits = limits or DEFAULT_LIMITS
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    return _decode_body(_read_body(path, limits), path, limits)


def _decode_body(body: bytes, where: Path | str, limits: Limits) -> dict[str, Any]:
    """The payload of a checkpoint's verified body: the zip and pickle checks, then
    ``torch.load(weights_only=True)`` and the plain-data walk."""
    _read_pickle(body, where, limits)
    payload = guarded(
        lambda: torch.load(io.BytesIO(body), map_location="cpu", weights_only=True),
        f"cannot read checkpoint {where}",
    )
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {where} holds {type(payload).__name__}, not a dict")
    _check_tree(payload, f"checkpoint {where}", limits)
    return payload


def dumps(payload: dict[str, Any]) -> bytes:
    """The bytes :func:`save` writes to a file -- header (magic, length, SHA-256) and body --
    for a checkpoint kept elsewhere (e.g. in Kafka messages).

    >>> loads(dumps({"answer": 42}))
    {'answer': 42}
    >>> dumps({"answer": 42}).startswith(MAGIC)
    True
    """
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getbuffer()
    return _HEADER.pack(MAGIC, len(body), hashlib.sha256(body).digest()) + bytes(body)


def loads(data: bytes, limits: Limits | None = None, where: str = "checkpoint") -> dict[str, Any]:
    """Read what :func:`dumps` wrote, with every check :func:`load` makes on a file (size,
    header and SHA-256 first); :class:`CheckpointError` naming ``where`` on any fault.

    >>> data = bytearray(dumps({"answer": 42}))
    >>> data[-5] ^= 1
    >>> loads(bytes(data), where="blob")
    Traceback (most recent call last):
    ...
    streamdas.checkpoint.CheckpointError: blob is damaged: its SHA-256 does not match
    """
    limits = limits or DEFAULT_LIMITS
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CheckpointError(f"{where} is {type(data).__name__}, not bytes")
    if len(data) > limits.max_bytes:
        raise CheckpointError(
            f"{where} is {len(data)} bytes, more than the {limits.max_bytes} a checkpoint may have"
        )
    data = bytes(data)
    if len(data) < _HEADER.size or not data.startswith(MAGIC):
        raise CheckpointError(f"{where} is not a checkpoint (no {MAGIC[:-2].decode()} header)")
    _, length, digest = _HEADER.unpack_from(data)
    body = data[_HEADER.size :]
    if length != len(body):
        raise CheckpointError(
            f"{where} is truncated or extended: its header says {length} bytes follow, {len(body)} do"
        )
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(f"{where} is damaged: its SHA-256 does not match")
    return _decode_body(body, where, limits)


def _tensor_fault(t: torch.Tensor, devices: tuple[str, ...] = ("cpu",)) -> str | None:
    """Why ``t`` may not come from a checkpoint, or None: only dense, contiguous tensors on
    one of ``devices``, of a plain dtype, whose memory is their storage's (no stride-0
    expansion, no meta tensor)."""
    if type(t) is not torch.Tensor:
        return f"is a {type(t).__name__}, not a plain tensor"
    if t.layout is not torch.strided or t.is_nested or t.is_quantized:
        return f"is not dense (layout {t.layout})"
    if t.device.type not in devices:
        return f"is on device {t.device}, not {' or '.join(devices)}"
    if t.dtype not in _DTYPES:
        return f"has dtype {t.dtype}"
    if t.requires_grad:
        return "requires grad"
    if not t.is_contiguous():
        return f"is not contiguous (strides {t.stride()} for shape {tuple(t.shape)})"
    if t.untyped_storage().nbytes() < (t.storage_offset() + t.numel()) * t.element_size():
        return "is larger than its storage"
    return None


def _check_tree(payload: Any, where: str, limits: Limits) -> None:
    """Every value is plain data or an acceptable tensor, within the depth and node bounds."""
    stack: list[tuple[Any, int]] = [(payload, 0)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            raise CheckpointError(f"{where} holds more than {limits.max_nodes} values")
        kind = type(value)
        if kind in (str, bool, type(None)):
            continue
        if kind is int:
            if abs(value) > 2**64:
                raise CheckpointError(f"{where} holds an integer beyond 2**64")
            continue
        if kind is float:
            continue
        if kind is torch.Tensor:
            fault = _tensor_fault(value)
            if fault is not None:
                raise CheckpointError(f"{where}: a tensor {fault}")
            continue
        if depth >= limits.max_depth:
            raise CheckpointError(f"{where} nests deeper than {limits.max_depth}")
        if isinstance(value, dict) and kind.__module__ in ("builtins", "collections"):
            for key in value:
                if type(key) not in (str, int):
                    raise CheckpointError(f"{where} has a {type(key).__name__} key")
            stack.extend((v, depth + 1) for v in value.values())
        elif kind in (list, tuple):
            stack.extend((v, depth + 1) for v in value)
        else:
            raise CheckpointError(f"{where} holds a {kind.__name__}, not plain data")


# ---------------------------------------------------------------------- validation helpers
_SCALARS = (str, int, float, bool, type(None))


def require(condition: Any, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` (for reading states field by field).

    >>> require(1 + 1 == 2, "arithmetic")
    >>> require(False, "bad state")
    Traceback (most recent call last):
    ...
    ValueError: bad state
    """
    if not condition:
        raise ValueError(message)


def plain(value: Any, what: str, max_len: int = 1_000_000) -> Any:
    """``value`` if it is a plain value: ``str``, ``int``, finite ``float``, ``bool``, ``None``,
    or a list or tuple of such scalars (at most ``max_len`` long); else ``ValueError``.

    >>> plain([1, 2.5, "a"], "sizes")
    [1, 2.5, 'a']
    >>> plain(float("inf"), "lr")
    Traceback (most recent call last):
    ...
    ValueError: lr is not a plain value: inf
    >>> plain({"a": 1}, "x")
    Traceback (most recent call last):
    ...
    ValueError: x is not a plain value: {'a': 1}
    """
    if isinstance(value, (list, tuple)):
        require(len(value) <= max_len, f"{what} is too long ({len(value)} > {max_len})")
        for v in value:
            plain(v, what)
        return value
    if type(value) not in _SCALARS or (type(value) is float and not math.isfinite(value)):
        raise ValueError(f"{what} is not a plain value: {short_repr(value)}")
    return value


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages (an integer too long to
    write out is named by its type).

    >>> short_repr("x" * 100, 10), short_repr(10**5000)
    ("'xxxxxx...", '<int>')
    """
    try:
        text = repr(value)
    except ValueError:
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plain_tree(value: Any, what: str, max_depth: int = 16, max_nodes: int = 1_000_000) -> Any:
    """``value`` if it is plain data all the way down -- dicts with ``str``/``int`` keys, lists,
    tuples and :func:`plain` scalars, at most ``max_depth`` deep and ``max_nodes`` values in
    all -- else ``ValueError`` (``extra`` data, which nothing else checks).

    >>> plain_tree({"offsets": {"t:0": 7}, "features": ["a", "b"]}, "extra")
    {'offsets': {'t:0': 7}, 'features': ['a', 'b']}
    >>> plain_tree({"a": [[[1]]]}, "extra", max_depth=2)
    Traceback (most recent call last):
    ...
    ValueError: extra nests deeper than 2
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    nodes = 0
    while stack:
        v, depth = stack.pop()
        nodes += 1
        require(nodes <= max_nodes, f"{what} holds more than {max_nodes} values")
        if type(v) in _SCALARS:
            plain(v, what)
            continue
        require(depth < max_depth, f"{what} nests deeper than {max_depth}")
        if type(v) is dict:
            require(all(type(k) in (str, int) for k in v), f"{what} has a key that is not a str or int")
            stack.extend((x, depth + 1) for x in v.values())
        elif type(v) in (list, tuple):
            stack.extend((x, depth + 1) for x in v)
        else:
            raise ValueError(f"{what} holds a {type(v).__name__}, not plain data")
    return value


def check_tensor(
    t: Any,
    what: str,
    *,
    dtype: torch.dtype | None = None,
    shape: tuple[int, ...] | torch.Size | None = None,
    finite: bool = True,
    nonnegative: bool = False,
) -> torch.Tensor:
    """``t`` if it is a tensor a checkpoint may hold (dense, contiguous, its memory its
    storage's; on the CPU, as files are read, or on a GPU, as a trainer's state in memory may
    be) with the given ``dtype`` and ``shape``, finite (NaN and inf refused unless
    ``finite=False``) and, with ``nonnegative``, nothing below zero; else ``ValueError``.

    >>> check_tensor(torch.ones(2, 3), "w", dtype=torch.float32, shape=(2, 3)).shape
    torch.Size([2, 3])
    >>> check_tensor(torch.zeros(1).expand(25_000, 25_000), "w")
    Traceback (most recent call last):
    ...
    ValueError: w is not contiguous (strides (0, 0) for shape (25000, 25000))
    >>> check_tensor(torch.tensor([1.0, float("nan")]), "w")
    Traceback (most recent call last):
    ...
    ValueError: w holds non-finite values
    """
    require(isinstance(t, torch.Tensor), f"{what} is not a tensor")
    fault = _tensor_fault(t, ("cpu", "cuda"))
    require(fault is None, f"{what} {fault}")
    require(dtype is None or t.dtype == dtype, f"{what} has dtype {t.dtype}, not {dtype}")
    require(
        shape is None or tuple(t.shape) == tuple(shape),
        f"{what} has shape {tuple(t.shape)}, not {tuple(shape or ())}",
    )
    if finite and t.is_floating_point():
        require(bool(torch.isfinite(t).all()), f"{what} holds non-finite values")
    if nonnegative:
        require(not bool((t < 0).any()), f"{what} holds negative values")
    return t


# ---------------------------------------------------------------------- parameter rules
@dataclass(frozen=True)
class Rule:
    """What a value read from a checkpoint may be (build one with :func:`number`,
    :func:`integer`, :func:`flag`, :func:`choice`, :func:`text` or :func:`sequence`).

    ``types`` are exact types (``bool`` is not an ``int`` here); numbers lie in
    ``[lo, hi]`` (ends excluded where ``open_lo`` / ``open_hi``); ``choices`` lists the
    allowed values; a sequence has at most ``max_len`` items (at least ``min_len``), each
    following ``items``; ``none`` allows ``None``.
    """

    types: tuple[type, ...]
    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False
    choices: tuple[Any, ...] | None = None
    items: Rule | None = None
    min_len: int = 0
    max_len: int = 0
    none: bool = False
    pattern: str | None = None

    def check(self, value: Any, what: str) -> Any:
        """``value`` if it follows the rule, else ``ValueError`` naming ``what``."""
        if value is None and self.none:
            return value
        require(
            type(value) in self.types,
            f"{what} is {short_repr(value)}, not of type {' or '.join(t.__name__ for t in self.types)}",
        )
        if self.choices is not None:
            require(value in self.choices, f"{what} is {short_repr(value)}, not one of {list(self.choices)}")
        if self.pattern is not None:
            require(
                len(value) <= 64 and re.fullmatch(self.pattern, value) is not None,
                f"{what} is {short_repr(value)}, which is not allowed",
            )
        if self.items is not None:
            require(
                self.min_len <= len(value) <= self.max_len,
                f"{what} has {len(value)} items, not {self.min_len} to {self.max_len}",
            )
            for i, item in enumerate(value):
                self.items.check(item, f"{what}[{i}]")
        if type(value) in (int, float):
            require(type(value) is int or math.isfinite(value), f"{what} is not finite: {value}")
            lo_ok = self.lo is None or (value > self.lo if self.open_lo else value >= self.lo)
            hi_ok = self.hi is None or (value < self.hi if self.open_hi else value <= self.hi)
            if not (lo_ok and hi_ok):
                left, right = "(" if self.open_lo else "[", ")" if self.open_hi else "]"
                raise ValueError(
                    f"{what} is {short_repr(value)}, outside {left}{self.lo:g}, {self.hi:g}{right}"
                )
        return value


def number(lo: float, hi: float, *, open_lo: bool = False, open_hi: bool = False, none: bool = False) -> Rule:
    """A finite ``int`` or ``float`` in ``[lo, hi]``.

    >>> number(0, 1, open_lo=True).check(0.5, "delta")
    0.5
    >>> number(0, 10, open_lo=True).check(1e30, "lr")
    Traceback (most recent call last):
    ...
    ValueError: lr is 1e+30, outside (0, 10]
    """
    return Rule((int, float), lo, hi, open_lo, open_hi, none=none)


def integer(lo: int, hi: int, *, none: bool = False) -> Rule:
    """An ``int`` (not a ``bool``) in ``[lo, hi]``.

    >>> integer(1, 1000).check(10**12, "max_buckets")
    Traceback (most recent call last):
    ...
    ValueError: max_buckets is 1000000000000, outside [1, 1000]
    """
    return Rule((int,), lo, hi, none=none)


def flag(*, none: bool = False) -> Rule:
    """A ``bool``."""
    return Rule((bool,), none=none)


def choice(*values: Any) -> Rule:
    """One of ``values`` (of their types).

    >>> choice("up", "down").check("sideways", "mode")
    Traceback (most recent call last):
    ...
    ValueError: mode is 'sideways', not one of ['up', 'down']
    """
    return Rule(tuple({type(v) for v in values}), choices=tuple(values))


def text(pattern: str = r"[A-Za-z0-9_.:-]*") -> Rule:
    """A short ``str`` (at most 64 characters) matching ``pattern`` in full."""
    return Rule((str,), pattern=pattern)


def sequence(items: Rule, max_len: int, min_len: int = 0) -> Rule:
    """A ``list`` or ``tuple`` of ``min_len`` to ``max_len`` values, each following ``items``."""
    return Rule((list, tuple), items=items, min_len=min_len, max_len=max_len)


def check_params(params: Mapping[str, Any], rules: Mapping[str, Rule], what: str) -> dict[str, Any]:
    """``params`` as a dict if every key has a rule and every value follows it; else
    ``ValueError``.

    >>> check_params({"delta": 0.01}, {"delta": number(0, 1)}, "ADWIN")
    {'delta': 0.01}
    >>> check_params({"command": "ls"}, {"delta": number(0, 1)}, "ADWIN")
    Traceback (most recent call last):
    ...
    ValueError: ADWIN has no parameter 'command'
    """
    require(isinstance(params, Mapping), f"{what} parameters are not a dict")
    out = {}
    for key, value in params.items():
        rule = rules.get(key) if isinstance(key, str) else None
        require(rule is not None, f"{what} has no parameter {short_repr(key)}")
        assert rule is not None
        out[key] = rule.check(value, f"{what} parameter {key!r}")
    return out


_SEED = integer(-(2**63), 2**64 - 1, none=True)
_DEVICE = text(r"cpu|cuda(:[0-9]{1,2})?")


def estimator_params(limits: Limits | None = None) -> dict[str, Rule]:
    """The parameters a checkpoint may give a DAS estimator, with their ranges (the drift
    detector has its own, :data:`DETECTOR_PARAMS`); widths are bounded by
    :attr:`Limits.max_units`.

    >>> estimator_params()["hidden_sizes"].check([10_000, 10_000], "hidden_sizes")
    Traceback (most recent call last):
    ...
    ValueError: hidden_sizes[0] is 10000, outside [1, 4096]
    >>> estimator_params()["device"].check("meta", "device")
    Traceback (most recent call last):
    ...
    ValueError: device is 'meta', which is not allowed
    """
    cap = (limits or DEFAULT_LIMITS).max_units
    return {
        "hidden_sizes": sequence(integer(1, cap), max_len=64, min_len=1),
        "batch_size": integer(1, 2**16),
        "batch_warmup": integer(0, 10**12),
        "grow_every": integer(1, 10**12),
        "alpha": number(0, 100),
        "lr": number(0, 10, open_lo=True),
        "optimizer": choice("adam", "adamw", "sgd"),
        "regularizer": choice("weighted_l1", "l21", "l1", "none"),
        "tau": number(0, 10),
        "growth_percentage": number(0, 10),
        "min_growth": integer(0, cap),
        "min_units": integer(1, cap),
        "max_units": integer(1, cap, none=True),
        "grow": flag(),
        "prune": flag(),
        "prune_horizon": integer(0, 10**12),
        "grow_init": choice("tau", "silent"),
        "activation": text(r"[a-z_]{1,32}"),
        "standardize": flag(),
        "clip_sd": number(0, 1e6, open_lo=True, none=True),
        "average_horizon": integer(0, 10**9),
        "device": _DEVICE,
        "seed": _SEED,
        "max_classes": integer(1, 2**20, none=True),
        "max_label_length": integer(1, 2**20),
        "max_features": integer(1, 2**24, none=True),
        "linear_path": number(0, 10),
        "rehearsal": integer(0, 64),
        "rehearsal_window": integer(1, 2**20),
        "memory": integer(0, 2**16),
        "n_neighbors": integer(1, 2**10),
        "mix_forgetting": number(0, 1, open_lo=True),
    }


# ---------------------------------------------------------------------- drift detectors
#: The drift detectors a checkpoint may name: River's real-valued detectors, by a fixed table.
#: Nothing else is ever constructed from a file (no module import, no attribute walk).
DRIFT_DETECTORS: dict[str, type] = {
    "ADWIN": drift.ADWIN,
    "KSWIN": drift.KSWIN,
    "PageHinkley": drift.PageHinkley,
    "NoDrift": drift.NoDrift,
    "DummyDriftDetector": drift.DummyDriftDetector,
}

#: Each detector's parameters a checkpoint may set, with their ranges. ADWIN runs in Rust,
#: where ``max_buckets=10**12`` aborts the process on allocation, ``clock=0`` and
#: ``max_buckets=0`` panic: the bounds keep every value one that River's own tests use.
DETECTOR_PARAMS: dict[str, dict[str, Rule]] = {
    "ADWIN": {
        "delta": number(0, 1, open_lo=True, open_hi=True),
        "clock": integer(1, 2**20),
        "max_buckets": integer(1, 1000),
        "min_window_length": integer(1, 2**20),
        "grace_period": integer(0, 2**30),
    },
    "KSWIN": {
        "alpha": number(0, 1, open_lo=True, open_hi=True),
        "window_size": integer(2, 10_000),
        "stat_size": integer(1, 9_999),
        "seed": _SEED,
        "window": sequence(number(-3.4e38, 3.4e38), max_len=10_000),
    },
    "PageHinkley": {
        "min_instances": integer(1, 2**30),
        "delta": number(0, 1e6),
        "threshold": number(0, 1e12, open_lo=True),
        "alpha": number(0, 1, open_lo=True),
        "mode": choice("up", "down", "both"),
    },
    "NoDrift": {},
    "DummyDriftDetector": {
        "trigger_method": choice("fixed", "random"),
        "t_0": integer(1, 2**40),
        "w": integer(0, 2**30),
        "dynamic_cloning": flag(),
        "seed": _SEED,
    },
}


def detector_to_state(detector: Any) -> dict[str, Any] | None:
    """A drift detector's class name and parameters as plain data (``None`` for ``None``).

    Raises ``ValueError`` for a detector outside :data:`DRIFT_DETECTORS` or with parameters
    that are not plain values, so a model that could not be restored is never saved.

    >>> from river import drift
    >>> detector_to_state(drift.ADWIN(delta=0.01))["params"]["delta"]
    0.01
    """
    if detector is None:
        return None
    name = next((n for n, c in DRIFT_DETECTORS.items() if type(detector) is c), None)
    if name is None:
        raise ValueError(
            f"drift detector {type(detector).__name__} cannot be checkpointed: not on "
            f"the allow-list {sorted(DRIFT_DETECTORS)}"
        )
    params = {}
    for key, value in detector._get_params().items():
        if hasattr(value, "maxlen"):  # KSWIN's initial window (a deque): its values
            value = list(value)
        params[key] = plain(value, f"drift detector parameter {key!r}")
    return {"class": name, "params": params}


def detector_from_state(state: Any) -> Any:
    """Rebuild what :func:`detector_to_state` wrote; ``ValueError`` for anything else,
    parameters out of range and a panic while building it included.

    >>> type(detector_from_state({"class": "PageHinkley", "params": {"threshold": 20.0}})).__name__
    'PageHinkley'
    >>> detector_from_state({"module": "os", "class": "system", "params": {"command": "ls"}})
    Traceback (most recent call last):
    ...
    ValueError: drift detector 'system' is not on the allow-list ...
    >>> detector_from_state({"class": "ADWIN", "params": {"clock": 0}})
    Traceback (most recent call last):
    ...
    ValueError: ADWIN parameter 'clock' is 0, outside [1, 1.04858e+06]
    """
    if state is None:
        return None
    require(isinstance(state, dict), "drift detector entry is not a dict")
    require(
        set(state) <= {"module", "class", "params"},
        f"drift detector entry has keys {sorted(map(str, state))}",
    )
    name = state.get("class")
    cls = DRIFT_DETECTORS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(
            f"drift detector {short_repr(name)} is not on the allow-list {sorted(DRIFT_DETECTORS)}"
        )
    if "module" in state:  # files before the allow-list also named the module: it must agree
        require(
            state["module"] == cls.__module__,
            f"drift detector module {short_repr(state['module'])} is not {cls.__module__!r}",
        )
    params = check_params(state.get("params", {}), DETECTOR_PARAMS[name], name)
    if name == "KSWIN":
        size = params.get("window_size", 100)
        require(
            params.get("stat_size", 30) < size and len(params.get("window") or ()) <= size,
            "KSWIN needs stat_size < window_size and a window within window_size",
        )
    try:
        return guarded(lambda: cls(**params), f"building drift detector {name}")
    except CheckpointError as exc:
        raise ValueError(str(exc)) from exc


# ---------------------------------------------------------------------- estimators
ESTIMATOR_FORMAT = "streamdas-estimator"


class Checkpointable(Protocol):
    """What a :func:`checkpointable` estimator class provides."""

    def to_state(self) -> dict[str, Any]: ...

    @classmethod
    def from_state(cls, state: dict[str, Any], limits: Limits | None = None) -> Any: ...


#: The estimator classes a checkpoint may name, by class name (filled by :func:`checkpointable`).
ESTIMATORS: dict[str, type[Checkpointable]] = {}

#: The library's own estimators (public names of the ``streamdas`` package): a checkpoint may
#: name one before its module was imported (the package imports its names on first use).
LIBRARY_ESTIMATORS = ("DASClassifier", "DASRegressor")

_T = TypeVar("_T", bound=type[Checkpointable])


def checkpointable(cls: _T) -> _T:
    """Class decorator: put ``cls`` on the table of estimators a checkpoint may name.

    The class provides ``to_state() -> dict`` (plain data and tensors) and a classmethod
    ``from_state(state, limits=None)`` that validates everything it reads.
    """
    name = cls.__name__
    if ESTIMATORS.get(name, cls) is not cls:
        raise ValueError(f"another estimator class is already registered as {name!r}")
    ESTIMATORS[name] = cls
    return cls


def estimator_to_state(estimator: Any) -> dict[str, Any]:
    """An estimator as plain data and tensors (``torch.load(weights_only=True)``-safe)."""
    name = type(estimator).__name__
    if ESTIMATORS.get(name) is not type(estimator):
        raise ValueError(f"{name} is not a checkpointable estimator")
    return {"format": ESTIMATOR_FORMAT, "class": name, "estimator": estimator.to_state()}


def estimator_from_state(payload: Any, where: str = "checkpoint", limits: Limits | None = None) -> Any:
    """Rebuild an estimator from :func:`estimator_to_state`'s data; :class:`CheckpointError`
    (naming ``where``) for anything that does not fit."""
    if not isinstance(payload, dict) or payload.get("format") != ESTIMATOR_FORMAT:
        raise CheckpointError(f"{where} is not a streamdas estimator checkpoint")
    name = payload.get("class")
    cls = _estimator_class(name) if isinstance(name, str) else None
    if cls is None:
        raise CheckpointError(f"{where}: unknown estimator class {short_repr(name)}")
    return guarded(
        lambda: cls.from_state(payload["estimator"], limits=limits or DEFAULT_LIMITS),
        f"{where}: checkpoint does not fit {name}",
    )


def _estimator_class(name: str) -> type[Checkpointable] | None:
    """The registered class named ``name``; one of :data:`LIBRARY_ESTIMATORS` is first
    registered by importing it from the package, as ``from streamdas import DASClassifier``
    would (the package, not a module: serialization stays below what it serializes)."""
    if name not in ESTIMATORS and name in LIBRARY_ESTIMATORS:
        import streamdas

        getattr(streamdas, name)
    return ESTIMATORS.get(name)


def save_estimator(estimator: Any, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
    """Save a :class:`~streamdas.DASClassifier` or :class:`~streamdas.DASRegressor` with its
    architecture, weights, optimizer and sizer state, and optional ``extra`` plain data
    (e.g. Kafka offsets) in the same atomic write.

    >>> import tempfile, pathlib
    >>> from streamdas import DASClassifier
    >>> model = DASClassifier(seed=1)
    >>> model.learn_one({"a": 1.0}, True)
    >>> p = save_estimator(model, pathlib.Path(tempfile.mkdtemp()) / "m.ckpt", extra={"offsets": {"0": 7}})
    >>> clone, extra = load_estimator(p)
    >>> extra, clone.predict_proba_one({"a": 1.0}) == model.predict_proba_one({"a": 1.0})
    ({'offsets': {'0': 7}}, True)
    """
    payload = estimator_to_state(estimator)
    payload["extra"] = plain_tree(extra or {}, "extra")
    return save(payload, path)


def load_estimator(
    path: str | os.PathLike[str], limits: Limits | None = None, check: bool = True
) -> tuple[Any, dict[str, Any]]:
    """Load what :func:`save_estimator` wrote: ``(estimator, extra)``.

    With ``check`` (the default) the estimator has predicted and taken an optimizer step on
    a copy of itself (:func:`self_check`) before it is returned. Raises
    :class:`CheckpointError` for every kind of damage, and only that.
    """
    payload = load(path, limits)
    extra = payload.get("extra", {})
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path}: extra data is {type(extra).__name__}, not a dict")
    guarded(lambda: plain_tree(extra, "extra data"), str(path))
    estimator = estimator_from_state(payload, where=str(path), limits=limits)
    if check:
        x, y = trial_input(estimator)
        self_check(estimator, x, y, str(path))
    return estimator, dict(extra)


# ---------------------------------------------------------------------- self-check
def trial_input(estimator: Any, features: list[Any] | None = None) -> tuple[dict[Any, float], Any]:
    """A sample for :func:`self_check`: 0.0 for every feature (``features``, else those the
    model knows, else one new one) and a label it knows (a target of 0.0 for a regressor).

    >>> from river import linear_model
    >>> trial_input(linear_model.LogisticRegression())
    ({'x': 0.0}, True)
    """
    if features is None:
        index = getattr(estimator, "_index", None)
        names = getattr(index, "names", None)
        if names is None:
            weights = getattr(estimator, "weights", None)
            names = list(weights) if isinstance(weights, dict) else []
        features = list(names)
    x = dict.fromkeys(features or ["x"], 0.0)
    if not isinstance(estimator, base.Classifier):
        return x, 0.0
    classes = getattr(estimator, "classes", None)
    return x, (classes[0] if classes else True)


def _check_output(estimator: Any, x: dict[Any, float]) -> None:
    if isinstance(estimator, base.Classifier):
        proba = estimator.predict_proba_one(x)
        require(isinstance(proba, dict), "predict_proba_one did not return a dict")
        values = list(proba.values())
        require(
            all(type(p) in (float, int) and math.isfinite(p) and 0 <= p <= 1 for p in values),
            f"predicted probabilities are not finite numbers in [0, 1]: {short_repr(values)}",
        )
        require(not values or abs(sum(values) - 1) < 1e-3, "predicted probabilities do not sum to 1")
    else:
        y = estimator.predict_one(x)
        require(
            isinstance(y, (int, float)) and math.isfinite(y), f"prediction is not finite: {short_repr(y)}"
        )


def self_check(estimator: Any, x: dict[Any, float], y: Any, where: str, *, learn: bool = True) -> None:
    """Predict ``x``, learn ``(x, y)`` until one optimizer step is taken, predict again -- on a
    deep copy of ``estimator``, which is left as it was. Any failure, a native panic or a
    non-finite output is a :class:`CheckpointError` naming ``where``.

    ``learn=False`` makes the trial prediction only, on ``estimator`` itself (prediction does
    not change it): for a model that is only predicted with, such as one without optimizer
    state, which could not learn as its writer would.

    >>> from river import linear_model
    >>> model = linear_model.LogisticRegression()
    >>> self_check(model, *trial_input(model), where="model")
    >>> model.weights
    {}
    >>> self_check(model, *trial_input(model), where="model", learn=False)
    """

    def predict_only() -> None:
        _check_output(estimator, x)

    def trial() -> None:
        copied = copy.deepcopy(estimator)
        _check_output(copied, x)
        pending = int(getattr(copied, "batch_size", 1)) - int(getattr(copied, "n_samples_buffered", 0))
        for _ in range(max(pending, 1)):
            copied.learn_one(x, y)
        _check_output(copied, x)

    if not learn:
        guarded(predict_only, f"{where}: the model fails its trial prediction")
        return
    guarded(trial, f"{where}: the model fails its trial prediction and learning step")
