"""A chunked, versioned blob store on a Kafka topic: a learner's full state, crash-safe.

One store holds any number of named states (``name``: a learner, a model snapshot) in partition
0 of one topic, meant to be compacted (``cleanup.policy=compact``). A state is an opaque
``bytes`` blob (the caller serializes: model, optimizer, averages, buffers, source offsets) with
an ``epoch`` (the writer's fencing token), a ``version`` (one more than any before it, given by
the store) and a small JSON ``meta`` dict (e.g. the source offsets, for a quick look without the
blob).

Layout on the topic (message key -> value)::

    {name}/slot-{s}/{i}   chunk i of the state in slot s (s = 0 or 1): a 41-byte header
                          (magic, write token, version, index, count, CRC-32) + at most chunk_bytes
    {name}/manifest       JSON: epoch, version, slot, n_chunks, chunk_bytes, length, sha256,
                          token, meta, and ``previous`` (the same fields of the version before)

**Crash safety (double-buffered slots).** :meth:`KafkaStateStore.save` writes the new chunks
into the slot that the current manifest does *not* reference, tombstones (value ``None``) the
chunk keys of that slot beyond the new count (left by a longer state), waits until every one of
those messages is acknowledged (``acks="all"``), and only then writes the manifest and waits for
it. A crash or broker failure before the manifest is sent leaves the previous manifest and its
slot untouched: readers keep loading the previous version; one while the manifest is in flight
publishes either nothing or the complete new version. Compaction keeps the newest
value per key, and the newest value of every key the current manifest references is the one it
was written with (the next write to that slot starts only after a newer manifest), so compaction
never breaks the current version either.

**Reading.** :meth:`KafkaStateStore.load` reads the partition from its beginning to the end
offset observed at the start, keeping only the newest value per key of that name (memory about
two states, whatever the topic's history; bounded by ``2 * (max_state_bytes +
max_message_bytes)``), then picks the manifest with the highest ``(epoch, version)`` and checks
every chunk (header: token, version, index, count, CRC-32), the total length and the SHA-256.
A reader that asks often follows the topic instead (:class:`StateFollower`): it reads each
record once and verifies each new manifest as it arrives. Manifests are JSON parsed within
bounds (size, types, ranges, no NaN); nothing is imported, executed or constructed by name.
Every failure is a :class:`~streamdas.checkpoint.CheckpointError`:

* :class:`DamagedStateError` -- the newest version cannot be used (a chunk missing, from another
  write, failing its checksum; an unreadable manifest). Its ``previous`` attribute holds the
  newest *older* version that still verifies (the one the manifest names as its predecessor, in
  the other slot, or any other manifest still in the log, except a superseded writer's: one
  written after a manifest of a higher epoch), or ``None``. The newest manifest
  carries its predecessor's description, so this fallback survives compaction (which keeps only
  the newest manifest value); the predecessor's chunks stay readable until the next save
  reuses its slot.
* :class:`StaleEpochError` -- :meth:`~KafkaStateStore.save` by a writer whose epoch is below the
  highest epoch of any manifest of that name.
* :class:`ConcurrentWriteError` -- another writer wrote to the same name during this save; the
  manifest was not written.
* :class:`StateUnavailableError` -- the broker did not answer or acknowledge in time (the
  :mod:`kafka.errors` exception is chained), or the topic does not exist (the clients never
  create topics: a missing topic is not an empty state). Nothing is silently lost: a save that
  raises has not published its manifest, or (failing while the manifest was in flight) may
  have published it complete; either way a reader gets a complete version and the caller
  retries.

Invalid arguments (a bad name, a negative epoch, a blob over ``max_state_bytes``, meta that is not
plain JSON) raise ``ValueError``.

**Epoch fencing: what is guaranteed.**

1. Readers return the highest ``(epoch, version)`` among the manifests they see: a manifest
   written later by a writer with a lower epoch (a zombie) is never preferred.
2. A writer learns the log's state cheaply: the store keeps, per name, the manifests and chunk
   keys it has seen and the offset it has read up to, so each save reads only the records
   appended since (normally none; the first save of a fresh store, or :meth:`latest_epoch`,
   reads the whole partition without keeping chunk data). A save whose epoch is below the
   highest seen raises :class:`StaleEpochError` before writing anything.
3. After its chunks are acknowledged, a save checks by offset arithmetic whether anybody else
   appended to the partition during the upload, and reads only those records: a newer-epoch
   manifest raises :class:`StaleEpochError`, a foreign record for one of its chunk keys or a
   manifest with the same or a higher version raises :class:`ConcurrentWriteError`; the manifest
   is then not written. What remains is the round trip between that check and the manifest's
   acknowledgement; a zombie's manifest written in it is ignored by readers (rule 1), and a
   chunk mixed into the newest slot is caught by the checks on reading (the previous version
   then stays available through :class:`DamagedStateError`). A broker-side fence (Kafka
   transactions) would close that window; kafka-python 3.0's idempotent and transactional
   producer is not used (see ``consumers/service.py``).
4. Epochs are the caller's: a new learner calls :meth:`~KafkaStateStore.claim`, which saves
   with one more than the highest epoch seen and makes sure no other writer claimed the same
   epoch first (the first manifest of an epoch in the log owns it), or saves with an
   increasing number of its own (e.g. a consumer-group generation). Saves with an *equal*
   epoch are allowed (the same learner, or its restart), so two writers must never share an
   epoch.

**Messages and the broker's size limit.** Every message (key, value and the record batch's
overhead, as kafka-python estimates it) is at most ``max_message_bytes`` (default 1,000,000),
below kafka-python's default ``max_request_size`` (1,048,576) and Kafka's default
``message.max.bytes`` (1,048,588). ``chunk_bytes`` (default 512 KiB) must leave room for the
header and key. A state of several MiB is many chunks.

**Brokers.** Tansu 0.6.0 (the test broker) accepts ``cleanup.policy=compact`` at topic creation
but does not compact (every value, tombstones included, is still read back: see
``tests/test_kafka_state_integration.py``), returns no topic configs from DescribeConfigs, and
accepted single messages of 120 MB, so its limit is not the binding one. Without compaction the
topic, and a full :meth:`~KafkaStateStore.load`, grow with every save; on Apache Kafka,
compaction only cleans closed segments, so give the topic a small ``segment.bytes`` or
``segment.ms`` (see :meth:`~KafkaStateStore.ensure_topic`). Tansu also answers ListOffsets
(latest) with the *last batch's* base offset + 1: the store processes whole fetched batches and
ends every save with a manifest in a batch of its own, so a scan still reaches the end.

The pure logic -- keys, chunk headers, manifests, the log view (:class:`StateLog`), the choice of
the version to return (:func:`choose`), the messages of a save (:func:`plan_save`) -- is here
without any I/O and unit-tested in ``tests/test_kafka_state.py``; :class:`KafkaStateStore` is a
thin Kafka layer around it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from streamdas.checkpoint import CheckpointError

__all__ = [
    "CHUNK_HEADER_BYTES",
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_STATE_BYTES",
    "MAX_META_BYTES",
    "ChunkHeader",
    "ConcurrentWriteError",
    "DamagedStateError",
    "KafkaStateStore",
    "Manifest",
    "SavePlan",
    "StaleEpochError",
    "StateFollower",
    "StateLog",
    "StateUnavailableError",
    "StoredState",
    "choose",
    "chunk_key",
    "decode_chunk",
    "encode_chunk",
    "manifest_key",
    "message_size",
    "parse_key",
    "plan_save",
]

log = logging.getLogger(__name__)

#: Default payload bytes per chunk message.
DEFAULT_CHUNK_BYTES = 512 * 1024
#: Default bound on one state's blob (refused above it, on save and on load).
DEFAULT_MAX_STATE_BYTES = 256 * 1024 * 1024
#: Default bound on one message as produced (key + value + batch overhead); below kafka-python's
#: default ``max_request_size`` (1,048,576) and Kafka's default ``message.max.bytes`` (1,048,588).
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
#: Bound on the JSON-encoded ``meta`` of one version (a manifest holds two: its own, the previous).
MAX_META_BYTES = 256 * 1024
#: Largest ``chunk_bytes`` a reader accepts in a manifest.
MAX_CHUNK_BYTES = 64 * 1024 * 1024
#: Largest epoch and version (they fit a signed 64-bit integer).
MAX_COUNTER = 2**63 - 1
#: A save flushes its producer after this many queued bytes (kafka-python 3.0 has no buffer cap).
SEND_WINDOW_BYTES = 16 * 1024 * 1024
#: How many manifests (by epoch, version) a :class:`StateLog` keeps as fallback candidates.
KEEP_MANIFESTS = 4

_MAGIC = b"SDKS"
_FORMAT = 1
_HEADER = struct.Struct(">4sB16sQIII")  # magic, format, token, version, index, n_chunks, crc32
#: Bytes of a chunk's header.
CHUNK_HEADER_BYTES = _HEADER.size
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_CHUNK_TAIL = re.compile(r"slot-([01])/(0|[1-9][0-9]{0,8})")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_MAX_KEY_BYTES = 200 + len("/slot-0/") + 9
_MAX_DEPTH = 32


def _reader(
    bootstrap_servers: Any, max_message_bytes: int, request_timeout_ms: int, client_options: dict[str, Any]
) -> Any:
    """A group-less consumer that reads a state topic from the start, fetching messages of up to
    ``max_message_bytes`` (a fetch waits at most a tenth of a second for new messages unless
    ``client_options`` sets ``fetch_max_wait_ms``)."""
    from kafka import KafkaConsumer

    return KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        allow_auto_create_topics=False,
        max_partition_fetch_bytes=max(1_048_576, 2 * max_message_bytes),
        request_timeout_ms=request_timeout_ms,
        **{"fetch_max_wait_ms": 100, **client_options},
    )


# ---------------------------------------------------------------------------------- errors
class StaleEpochError(CheckpointError):
    """A save by a writer whose epoch is below the newest manifest's: it has been superseded."""


class ConcurrentWriteError(CheckpointError):
    """Another writer wrote this name's slot or manifest during a save; nothing was published."""


class StateUnavailableError(CheckpointError):
    """The broker did not answer or acknowledge in time; the cause is chained. Retry later."""


class DamagedStateError(CheckpointError):
    """The newest version of a state cannot be used.

    Attributes
    ----------
    version
        The newest version (``None`` if even its manifest is unreadable).
    previous
        The newest older version that verifies completely (a :class:`StoredState`), or ``None``.
    """

    def __init__(self, message: str, version: int | None, previous: StoredState | None) -> None:
        super().__init__(message)
        self.version = version
        self.previous = previous


# ---------------------------------------------------------------------------------- keys
def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"state name must match {_NAME.pattern}, got {name!r}")
    return name


def manifest_key(name: str) -> bytes:
    """The message key of ``name``'s manifest.

    >>> manifest_key("learner")
    b'learner/manifest'
    """
    return f"{_check_name(name)}/manifest".encode()


def chunk_key(name: str, slot: int, index: int) -> bytes:
    """The message key of chunk ``index`` of slot ``slot`` (0 or 1).

    >>> chunk_key("learner", 1, 12)
    b'learner/slot-1/12'
    """
    if slot not in (0, 1) or not 0 <= index < 10**9:
        raise ValueError(f"bad slot {slot} or chunk index {index}")
    return f"{_check_name(name)}/slot-{slot}/{index}".encode()


def parse_key(name: str, key: bytes | None) -> tuple[str, int, int] | None:
    """``("manifest", 0, 0)``, ``("chunk", slot, index)`` or ``None`` (not a key of ``name``).

    >>> parse_key("a", b"a/slot-0/3")
    ('chunk', 0, 3)
    >>> parse_key("a", b"a/manifest")
    ('manifest', 0, 0)
    >>> parse_key("a", b"ab/manifest") is None, parse_key("a", b"a/slot-2/0") is None
    (True, True)
    """
    if key is None:
        return None
    prefix = name.encode() + b"/"
    if not key.startswith(prefix) or len(key) > _MAX_KEY_BYTES:
        return None
    try:
        tail = key[len(prefix) :].decode("ascii")
    except UnicodeDecodeError:
        return None
    if tail == "manifest":
        return ("manifest", 0, 0)
    m = _CHUNK_TAIL.fullmatch(tail)
    return ("chunk", int(m.group(1)), int(m.group(2))) if m else None


def message_size(key: bytes | None, value: bytes | None) -> int:
    """Bytes of one message as kafka-python sizes it against ``max_request_size``.

    >>> message_size(b"k", b"x" * 100) > 100
    True
    """
    from kafka.record.default_records import DefaultRecordBatchBuilder

    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, []))


# ---------------------------------------------------------------------------------- chunks
@dataclass(frozen=True)
class ChunkHeader:
    """What a chunk says about itself: the write it belongs to and its place in it."""

    token: bytes
    version: int
    index: int
    n_chunks: int
    crc32: int


def encode_chunk(token: bytes, version: int, index: int, n_chunks: int, payload: bytes) -> bytes:
    """A chunk message's value: the header, then the payload.

    >>> value = encode_chunk(b"t" * 16, 7, 0, 2, b"hello")
    >>> len(value) == CHUNK_HEADER_BYTES + 5
    True
    >>> header, payload = decode_chunk(value)
    >>> header.version, header.index, header.n_chunks, payload
    (7, 0, 2, b'hello')
    """
    if len(token) != 16:
        raise ValueError("token must be 16 bytes")
    return _HEADER.pack(_MAGIC, _FORMAT, token, version, index, n_chunks, zlib.crc32(payload)) + payload


def decode_chunk(value: bytes) -> tuple[ChunkHeader, bytes]:
    """Split a chunk message's value into its header and payload; check magic and CRC-32.

    Raises :class:`~streamdas.checkpoint.CheckpointError` for anything that is not a whole chunk.

    >>> decode_chunk(b"short")
    Traceback (most recent call last):
    ...
    streamdas.checkpoint.CheckpointError: chunk too short: 5 bytes
    >>> value = bytearray(encode_chunk(b"t" * 16, 1, 0, 1, b"data"))
    >>> value[-1] ^= 1
    >>> decode_chunk(bytes(value))
    Traceback (most recent call last):
    ...
    streamdas.checkpoint.CheckpointError: chunk fails its CRC-32
    """
    if len(value) < CHUNK_HEADER_BYTES:
        raise CheckpointError(f"chunk too short: {len(value)} bytes")
    magic, fmt, token, version, index, n_chunks, crc = _HEADER.unpack_from(value)
    if magic != _MAGIC or fmt != _FORMAT:
        raise CheckpointError(f"not a chunk (magic {magic!r}, format {fmt})")
    payload = bytes(value[CHUNK_HEADER_BYTES:])
    if zlib.crc32(payload) != crc:
        raise CheckpointError("chunk fails its CRC-32")
    return ChunkHeader(token, version, index, n_chunks, crc), payload


# ---------------------------------------------------------------------------------- manifests
def _plain_json(value: Any, what: str, depth: int = 0) -> Any:
    """``value`` if it is plain JSON data (str keys, finite floats, bounded depth); else ValueError."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"{what} is nested deeper than {_MAX_DEPTH}")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what} holds a non-finite number")
        return value
    if isinstance(value, (list, tuple)):
        return [_plain_json(v, what, depth + 1) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"{what} has a non-string key")
        return {k: _plain_json(v, what, depth + 1) for k, v in value.items()}
    raise ValueError(f"{what} holds {type(value).__name__}, not plain JSON")


def _no_constant(token: str) -> Any:
    raise ValueError(f"non-finite number {token}")


def _counter(value: Any, what: str, low: int = 0, high: int = MAX_COUNTER) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer in [{low}, {high}], got {value!r}")
    return value


_FIELDS = {
    "format",
    "name",
    "epoch",
    "version",
    "slot",
    "n_chunks",
    "chunk_bytes",
    "length",
    "sha256",
    "token",
    "meta",
    "previous",
}


@dataclass(frozen=True)
class Manifest:
    """One version of a state: where its chunks are and how to check them.

    >>> m = Manifest("a", epoch=2, version=5, slot=1, n_chunks=1, chunk_bytes=8, length=3,
    ...              sha256=hashlib.sha256(b"abc").hexdigest(), token="0" * 32, meta={"k": 1})
    >>> Manifest.decode(m.encode(), "a", max_state_bytes=100) == m
    True
    >>> Manifest.decode(b'{"format": 1}', "a", max_state_bytes=100)
    Traceback (most recent call last):
    ...
    streamdas.checkpoint.CheckpointError: bad manifest: fields missing ...
    """

    name: str
    epoch: int
    version: int
    slot: int
    n_chunks: int
    chunk_bytes: int
    length: int
    sha256: str
    token: str
    meta: dict[str, Any] = field(default_factory=dict)
    previous: Manifest | None = None

    @property
    def rank(self) -> tuple[int, int]:
        """``(epoch, version)``: readers prefer the highest."""
        return (self.epoch, self.version)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "name": self.name,
            "epoch": self.epoch,
            "version": self.version,
            "slot": self.slot,
            "n_chunks": self.n_chunks,
            "chunk_bytes": self.chunk_bytes,
            "length": self.length,
            "sha256": self.sha256,
            "token": self.token,
            "meta": self.meta,
            "previous": None if self.previous is None else self.previous.to_json(),
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def decode(
        cls, raw: bytes, name: str, *, max_state_bytes: int, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> Manifest:
        """Parse and check a manifest value; :class:`~streamdas.checkpoint.CheckpointError` if bad."""
        if len(raw) > max_bytes:
            raise CheckpointError(f"bad manifest: {len(raw)} bytes, more than {max_bytes}")
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
            return cls._from_json(data, name, max_state_bytes, nested=False)
        except (ValueError, TypeError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError
            raise CheckpointError(f"bad manifest: {exc}") from exc

    @classmethod
    def _from_json(cls, data: Any, name: str, max_state_bytes: int, nested: bool) -> Manifest:
        if not isinstance(data, dict):
            raise ValueError(f"a manifest is a JSON object, not {type(data).__name__}")
        if set(data) != _FIELDS:
            missing, extra = sorted(_FIELDS - set(data)), sorted(set(data) - _FIELDS)
            raise ValueError(f"fields missing {missing}, unknown {extra}")
        if data["format"] != _FORMAT or isinstance(data["format"], bool):
            raise ValueError(f"format {data['format']!r}, expected {_FORMAT}")
        if data["name"] != name:
            raise ValueError(f"manifest of {data['name']!r} under the key of {name!r}")
        chunk_bytes = _counter(data["chunk_bytes"], "chunk_bytes", 1, MAX_CHUNK_BYTES)
        length = _counter(data["length"], "length", 0, max_state_bytes)
        n_chunks = _counter(data["n_chunks"], "n_chunks", 0, 10**9 - 1)
        if n_chunks != -(-length // chunk_bytes):
            raise ValueError(f"{n_chunks} chunks for {length} bytes of {chunk_bytes}")
        for key, pattern in (("sha256", _HEX64), ("token", _HEX32)):
            if not isinstance(data[key], str) or not pattern.fullmatch(data[key]):
                raise ValueError(f"{key} is not lowercase hex of the right length")
        if not isinstance(data["meta"], dict):
            raise ValueError("meta is not an object")
        previous = data["previous"]
        if previous is not None:
            if nested:
                raise ValueError("a previous version has a previous of its own")
            previous = cls._from_json(previous, name, max_state_bytes, nested=True)
        slot = _counter(data["slot"], "slot", 0, 1)
        version = _counter(data["version"], "version", 1)
        epoch = _counter(data["epoch"], "epoch")
        if previous is not None and (previous.slot == slot or previous.version >= version):
            raise ValueError("previous version in the same slot or not older")
        return cls(
            name=name,
            epoch=epoch,
            version=version,
            slot=slot,
            n_chunks=n_chunks,
            chunk_bytes=chunk_bytes,
            length=length,
            sha256=data["sha256"],
            token=data["token"],
            meta=_plain_json(data["meta"], "meta"),
            previous=previous,
        )


@dataclass(frozen=True)
class StoredState:
    """A verified state: the blob and what was saved with it."""

    name: str
    blob: bytes
    epoch: int
    version: int
    meta: dict[str, Any]


# ---------------------------------------------------------------------------------- the log view
def _payload_bytes(value: bytes | None) -> int:
    """Bytes of a kept chunk value that count toward the memory bound (headers aside)."""
    return max(0, len(value) - CHUNK_HEADER_BYTES) if value else 0


class StateLog:
    """What the partition says about one name: newest value per key, the best manifests.

    Records may be applied in any order and more than once (a record only replaces a key's value
    if its offset is higher), so a writer can apply its own messages and the records it reads
    around them. With ``keep_values`` it keeps chunk values (for :func:`choose`); without, only
    which chunk keys are live (for :func:`plan_save`).

    >>> view = StateLog("a", keep_values=False)
    >>> view.apply(0, b"a/slot-0/0", b"x"); view.apply(1, b"a/slot-0/1", b"y")
    >>> view.apply(2, b"a/slot-0/1", None); view.apply(3, b"other/manifest", b"{}")
    >>> sorted(view.live_chunks(0)), view.best is None
    ([0], True)
    """

    def __init__(
        self,
        name: str,
        *,
        keep_values: bool,
        max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.name = _check_name(name)
        self.keep_values = keep_values
        self.max_state_bytes = max_state_bytes
        self.max_message_bytes = max_message_bytes
        self.next_offset = 0  # the first offset not yet read (for incremental reads)
        self._chunks: dict[tuple[int, int], tuple[int, bytes | None]] = {}  # (slot, i) -> (offset, v)
        self._chunk_bytes = 0
        self._manifests: dict[int, Manifest] = {}  # offset -> manifest, the best few
        self.last_manifest_offset = -1
        self.last_manifest_problem: str | None = None  # the newest manifest record is unreadable
        self.deleted = False  # the newest manifest record is a tombstone
        self.highest_epoch: int | None = None
        self.max_version = 0
        self._epoch_first: dict[int, int] = {}  # epoch -> offset of its first manifest

    # ------------------------------------------------------------------ applying records
    def apply(self, offset: int, key: bytes | None, value: bytes | None) -> None:
        """Take one record of the partition into account (others' keys are ignored)."""
        kind = parse_key(self.name, key)
        if kind is None:
            return
        if kind[0] == "manifest":
            self._apply_manifest(offset, value)
        else:
            self._apply_chunk(offset, (kind[1], kind[2]), value)

    def _apply_manifest(self, offset: int, value: bytes | None) -> None:
        problem: str | None = None
        if value is not None:
            try:
                manifest = Manifest.decode(
                    value, self.name, max_state_bytes=self.max_state_bytes, max_bytes=self.max_message_bytes
                )
            except CheckpointError as exc:
                problem = f"the manifest at offset {offset} is unreadable: {exc}"
            else:
                self.highest_epoch = max(manifest.epoch, self.highest_epoch or 0)
                self.max_version = max(self.max_version, manifest.version)
                first = self._epoch_first.get(manifest.epoch)
                self._epoch_first[manifest.epoch] = offset if first is None else min(first, offset)
                self._manifests[offset] = manifest
                if len(self._manifests) > KEEP_MANIFESTS:
                    worst = min(self._manifests, key=lambda o: (*self._manifests[o].rank, o))
                    del self._manifests[worst]
        if offset > self.last_manifest_offset:
            self.last_manifest_offset = offset
            self.last_manifest_problem = problem
            self.deleted = value is None

    def _apply_chunk(self, offset: int, where: tuple[int, int], value: bytes | None) -> None:
        old = self._chunks.get(where)
        if old is not None and old[0] >= offset:
            return
        kept: bytes | None
        if value is None:
            kept = None  # a tombstone: remembered (with its offset) so an older value stays dead
        elif not self.keep_values:
            kept = b""
        elif len(value) > self.max_message_bytes:
            kept = b"oversized"  # fails decoding: damaged, never used
        else:
            kept = value
        self._chunks[where] = (offset, kept)
        self._chunk_bytes += _payload_bytes(kept) - (_payload_bytes(old[1]) if old else 0)
        if self._chunk_bytes > 2 * (self.max_state_bytes + self.max_message_bytes):
            raise CheckpointError(
                f"more chunk data under {self.name!r} than two states of "
                f"max_state_bytes={self.max_state_bytes}: refusing to read on"
            )

    # ------------------------------------------------------------------ queries
    def live_chunks(self, slot: int) -> set[int]:
        """Indices of chunk keys in ``slot`` whose newest record is not a tombstone."""
        return {i for (s, i), (_, v) in self._chunks.items() if s == slot and v is not None}

    def chunk(self, slot: int, index: int) -> tuple[int, bytes] | None:
        """``(offset, value)`` of the newest record of a chunk key, or ``None``."""
        found = self._chunks.get((slot, index))
        return None if found is None or found[1] is None else (found[0], found[1])

    def manifests(self) -> list[tuple[int, Manifest]]:
        """``(offset, manifest)`` kept, best first (highest epoch, version, then offset)."""
        return sorted(self._manifests.items(), key=lambda item: (*item[1].rank, item[0]), reverse=True)

    def first_manifest_offset(self, epoch: int) -> int | None:
        """Offset of the first manifest of ``epoch`` read (``None``: none): the first claimant
        of an epoch owns it (see :meth:`KafkaStateStore.claim`)."""
        return self._epoch_first.get(epoch)

    def fenced(self, offset: int, manifest: Manifest) -> bool:
        """Whether ``manifest`` (at ``offset``) was written after a higher epoch's first manifest:
        a superseded writer's (a zombie's) write, never offered as a fallback."""
        return any(epoch > manifest.epoch and first < offset for epoch, first in self._epoch_first.items())

    @property
    def best(self) -> Manifest | None:
        """The manifest readers prefer: the highest ``(epoch, version)``."""
        found = self.manifests()
        return found[0][1] if found else None

    def without_values(self) -> StateLog:
        """A copy that keeps which chunk keys are live, not their values (a writer's view)."""
        view = StateLog(
            self.name,
            keep_values=False,
            max_state_bytes=self.max_state_bytes,
            max_message_bytes=self.max_message_bytes,
        )
        view.next_offset = self.next_offset
        view._chunks = {k: (o, None if v is None else b"") for k, (o, v) in self._chunks.items()}
        view._manifests = dict(self._manifests)
        view.last_manifest_offset = self.last_manifest_offset
        view.last_manifest_problem = self.last_manifest_problem
        view.deleted = self.deleted
        view.highest_epoch = self.highest_epoch
        view.max_version = self.max_version
        view._epoch_first = dict(self._epoch_first)
        return view


# ---------------------------------------------------------------------------------- reading
def assemble(view: StateLog, manifest: Manifest) -> StoredState:
    """The state ``manifest`` describes, from ``view``'s chunks, checked; else CheckpointError."""
    if not view.keep_values:
        raise ValueError("assemble needs a StateLog with keep_values=True")
    token = bytes.fromhex(manifest.token)
    parts = []
    for i in range(manifest.n_chunks):
        found = view.chunk(manifest.slot, i)
        where = f"chunk {i} of version {manifest.version} (slot {manifest.slot})"
        if found is None:
            raise CheckpointError(f"{where} is missing")
        try:
            header, payload = decode_chunk(found[1])
        except CheckpointError as exc:
            raise CheckpointError(f"{where} at offset {found[0]}: {exc}") from None
        if header.token != token:
            raise CheckpointError(
                f"{where} at offset {found[0]} belongs to another write (version {header.version})"
            )
        if (header.version, header.index, header.n_chunks) != (manifest.version, i, manifest.n_chunks):
            raise CheckpointError(
                f"{where} at offset {found[0]} says version {header.version}, "
                f"chunk {header.index} of {header.n_chunks}"
            )
        expected = min(manifest.chunk_bytes, manifest.length - i * manifest.chunk_bytes)
        if len(payload) != expected:
            raise CheckpointError(f"{where} holds {len(payload)} bytes, expected {expected}")
        parts.append(payload)
    blob = b"".join(parts)
    if len(blob) != manifest.length:
        raise CheckpointError(f"version {manifest.version} has {len(blob)} bytes, expected {manifest.length}")
    if hashlib.sha256(blob).hexdigest() != manifest.sha256:
        raise CheckpointError(f"version {manifest.version} fails its SHA-256")
    return StoredState(view.name, blob, manifest.epoch, manifest.version, manifest.meta)


def choose(view: StateLog) -> StoredState | None:
    """The state to load from ``view`` (with values): the highest ``(epoch, version)``, verified.

    ``None`` if the name has no manifest (or its newest manifest record is a tombstone).
    :class:`DamagedStateError` if the newest version does not verify or its manifest is
    unreadable; the error's ``previous`` is the best older version that verifies, if any, and
    not :meth:`~StateLog.fenced`.

    >>> choose(StateLog("a", keep_values=True)) is None
    True
    """
    ranked = view.manifests()
    newest_offset = ranked[0][0] if ranked else -1
    problem: str | None = None
    newest_version: int | None = None
    candidates: list[Manifest] = []
    if view.last_manifest_offset > newest_offset and view.deleted:
        return None
    if view.last_manifest_offset > newest_offset and view.last_manifest_problem is not None:
        problem = view.last_manifest_problem
    elif not ranked:
        return None
    if problem is None:
        newest = ranked[0][1]
        newest_version = newest.version
        try:
            return assemble(view, newest)
        except CheckpointError as exc:
            problem = f"version {newest.version} (epoch {newest.epoch}) is damaged: {exc}"
        candidates = [m for m in (newest.previous,) if m is not None]
        ranked = ranked[1:]
    for offset, manifest in ranked:
        if not view.fenced(offset, manifest):
            candidates += [manifest] + ([manifest.previous] if manifest.previous is not None else [])
    seen: set[str] = set()
    for manifest in sorted(candidates, key=lambda m: m.rank, reverse=True):
        if manifest.token in seen:
            continue
        seen.add(manifest.token)
        try:
            previous = assemble(view, manifest)
        except CheckpointError:
            continue
        raise DamagedStateError(
            f"state {view.name!r}: {problem}; version {previous.version} "
            f"(epoch {previous.epoch}) is intact (the error's .previous)",
            newest_version,
            previous,
        )
    raise DamagedStateError(
        f"state {view.name!r}: {problem}; no older version is intact", newest_version, None
    )


# ---------------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class SavePlan:
    """The messages of one save: first ``records`` (tombstones, then chunks), then ``manifest``."""

    manifest: Manifest
    records: list[tuple[bytes, bytes | None]]

    @property
    def chunk_keys(self) -> set[bytes]:
        return {k for k, v in self.records if v is not None}


def check_meta(meta: dict[str, Any] | None) -> dict[str, Any]:
    """``meta`` as plain JSON data within :data:`MAX_META_BYTES`; else ValueError.

    >>> check_meta({"offsets": {"in:0": 12}})
    {'offsets': {'in:0': 12}}
    >>> check_meta({"x": float("nan")})
    Traceback (most recent call last):
    ...
    ValueError: meta holds a non-finite number
    """
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise ValueError(f"meta must be a dict, not {type(meta).__name__}")
    plain = _plain_json(meta, "meta")
    size = len(json.dumps(plain, separators=(",", ":")).encode())
    if size > MAX_META_BYTES:
        raise ValueError(f"meta is {size} bytes encoded, more than {MAX_META_BYTES}")
    return plain


def plan_save(
    view: StateLog, blob: bytes, *, epoch: int, meta: dict[str, Any] | None, chunk_bytes: int, token: bytes
) -> SavePlan:
    """The messages that save ``blob`` as the next version, given the writer's ``view``.

    The new chunks go to the slot the preferred manifest does not use; chunk keys of that slot
    beyond the new count are tombstoned; the version is one more than any seen. Raises
    :class:`StaleEpochError` if ``epoch`` is below the highest epoch in ``view``.

    >>> view = StateLog("a", keep_values=False)
    >>> plan = plan_save(view, b"abcdef", epoch=0, meta=None, chunk_bytes=4, token=b"t" * 16)
    >>> plan.manifest.version, plan.manifest.slot, [k for k, _ in plan.records]
    (1, 0, [b'a/slot-0/0', b'a/slot-0/1'])
    """
    _counter(epoch, "epoch")
    if view.highest_epoch is not None and epoch < view.highest_epoch:
        raise StaleEpochError(
            f"state {view.name!r}: epoch {epoch} is below the newest manifest's "
            f"epoch {view.highest_epoch}; this writer has been superseded"
        )
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise ValueError(f"blob must be bytes, not {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) > view.max_state_bytes:
        raise ValueError(f"state of {len(blob)} bytes is over max_state_bytes={view.max_state_bytes}")
    meta = check_meta(meta)
    preferred = view.best
    slot = 0 if preferred is None else 1 - preferred.slot
    n_chunks = -(-len(blob) // chunk_bytes)
    version = view.max_version + 1
    if version > MAX_COUNTER:
        raise ValueError("version counter exhausted")
    records: list[tuple[bytes, bytes | None]] = [
        (chunk_key(view.name, slot, i), None) for i in sorted(view.live_chunks(slot)) if i >= n_chunks
    ]
    records += [
        (
            chunk_key(view.name, slot, i),
            encode_chunk(token, version, i, n_chunks, blob[i * chunk_bytes : (i + 1) * chunk_bytes]),
        )
        for i in range(n_chunks)
    ]
    previous = None
    if preferred is not None:
        previous = dataclasses.replace(preferred, previous=None)
    manifest = Manifest(
        view.name,
        epoch=epoch,
        version=version,
        slot=slot,
        n_chunks=n_chunks,
        chunk_bytes=chunk_bytes,
        length=len(blob),
        sha256=hashlib.sha256(blob).hexdigest(),
        token=token.hex(),
        meta=meta,
        previous=previous,
    )
    return SavePlan(manifest, records)


# ---------------------------------------------------------------------------------- Kafka I/O
class KafkaStateStore:
    """Named, versioned, chunked states in partition 0 of a (compacted) Kafka topic.

    Parameters
    ----------
    bootstrap_servers
        Kafka brokers, ``host:port[,host:port...]``.
    topic
        The state topic (create it with :meth:`ensure_topic`).
    chunk_bytes
        Payload bytes per chunk message (a chunk + header + key must fit ``max_message_bytes``).
    max_state_bytes
        Largest blob saved or loaded; a manifest claiming more is refused.
    max_message_bytes
        Bound on every produced message (kafka-python's size estimate). Raise it only with the
        broker's ``message.max.bytes`` (or the topic's ``max.message.bytes``).
    timeout_s
        Deadline of one operation (a save's flushes, a scan).
    client_options
        Extra settings given to every kafka-python client (producer, consumer, admin), e.g.
        ``security_protocol``, ``sasl_*``, ``ssl_*``, ``client_id``.

    Safe to share between threads: one lock serializes its operations. The clients are made
    on first use and remade after a Kafka error.
    """

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        topic: str,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        timeout_s: float = 60.0,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        if (
            not 1 <= chunk_bytes <= MAX_CHUNK_BYTES
            or message_size(b"k" * _MAX_KEY_BYTES, bytes(CHUNK_HEADER_BYTES + chunk_bytes))
            > max_message_bytes
        ):
            raise ValueError(
                f"chunk_bytes={chunk_bytes}: a chunk message (the longest key, the "
                f"{CHUNK_HEADER_BYTES}-byte header, the chunk and the batch overhead) "
                f"must fit max_message_bytes={max_message_bytes}"
            )
        if max_message_bytes < 2 * MAX_META_BYTES + 4096:
            raise ValueError(f"max_message_bytes={max_message_bytes} cannot hold a manifest")
        if not 0 <= max_state_bytes <= MAX_COUNTER or timeout_s <= 0:
            raise ValueError("max_state_bytes must be >= 0 and timeout_s > 0")
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.chunk_bytes = chunk_bytes
        self.max_state_bytes = max_state_bytes
        self.max_message_bytes = max_message_bytes
        self.timeout_s = timeout_s
        self.client_options = dict(client_options or {})
        self._views: dict[str, StateLog] = {}
        self._producer: Any = None
        self._consumer: Any = None
        self._lock = threading.Lock()
        self._topic_checked = False

    # ------------------------------------------------------------------ clients
    def _request_timeout_ms(self) -> int:
        return max(1000, min(30000, int(self.timeout_s * 1000)))

    def _get_producer(self) -> Any:
        if self._producer is None:
            from kafka import KafkaProducer

            timeout_ms = int(self.timeout_s * 1000)
            request_ms = self._request_timeout_ms()
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap_servers,
                acks="all",
                # kafka-python 3.0's idempotent producer can stall for good after a delivery
                # timeout (see consumers/service.py); order matters only across flushes here.
                enable_idempotence=False,
                linger_ms=0,
                allow_auto_create_topics=False,
                max_request_size=max(1_048_576, self.max_message_bytes),
                request_timeout_ms=request_ms,
                delivery_timeout_ms=max(timeout_ms, request_ms),
                max_block_ms=timeout_ms,
                **self.client_options,
            )
        return self._producer

    def _get_consumer(self) -> Any:
        if self._consumer is None:
            from kafka import TopicPartition

            self._consumer = _reader(
                self.bootstrap_servers,
                self.max_message_bytes,
                self._request_timeout_ms(),
                self.client_options,
            )
            self._consumer.assign([TopicPartition(self.topic, 0)])
            self._topic_checked = False
        return self._consumer

    def _drop_clients(self) -> None:
        for client in (self._producer, self._consumer):
            if client is not None:
                try:
                    if client is self._producer:
                        client.close(timeout=0)
                    else:
                        client.close(autocommit=False)
                except Exception:  # closing a broken client must not hide the original error
                    log.debug("closing a kafka client failed", exc_info=True)
        self._producer = self._consumer = None

    def close(self) -> None:
        """Close the Kafka clients (the store can be used again: they are recreated)."""
        with self._lock:
            self._drop_clients()

    def __enter__(self) -> KafkaStateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ensure_topic(self, configs: dict[str, str] | None = None) -> bool:
        """Create the topic (1 partition, ``cleanup.policy=compact`` + ``configs``) if missing.

        Returns whether it was created. On Apache Kafka consider ``{"segment.ms": "3600000"}``
        or a small ``segment.bytes``: compaction never cleans the active segment (1 GiB by
        default). Tansu 0.6.0 accepts and ignores these.
        """
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic
        from kafka.errors import KafkaError, TopicAlreadyExistsError

        topic_configs = {"cleanup.policy": "compact", **(configs or {})}
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers,
                request_timeout_ms=self._request_timeout_ms(),
                **self.client_options,
            )
        except KafkaError as exc:
            raise StateUnavailableError(f"cannot reach {self.bootstrap_servers}: {exc}") from exc
        try:
            admin.create_topics([NewTopic(self.topic, 1, 1, topic_configs=topic_configs)])
            return True
        except TopicAlreadyExistsError:
            return False
        except KafkaError as exc:
            raise StateUnavailableError(f"cannot create topic {self.topic!r}: {exc}") from exc
        finally:
            admin.close()

    # ------------------------------------------------------------------ reading
    def _deadline(self) -> float:
        return time.monotonic() + self.timeout_s

    def _end_offset(self, deadline: float) -> int:
        from kafka import TopicPartition

        tp = TopicPartition(self.topic, 0)
        consumer = self._get_consumer()
        while not self._topic_checked:  # a missing topic is an error, not an empty state
            error: Exception | None
            try:
                partitions = consumer.partitions_for_topic(self.topic)
            except Exception as exc:
                partitions, error = None, exc
            else:
                error = None
            if partitions and 0 in partitions:
                self._topic_checked = True
            elif time.monotonic() > deadline:
                raise StateUnavailableError(
                    f"topic {self.topic!r} does not exist (or is not readable): create it with ensure_topic()"
                ) from error
            else:
                time.sleep(0.1)
        while True:
            try:
                return int(consumer.end_offsets([tp])[tp])
            except Exception as exc:  # KafkaTimeoutError, UnknownTopicOrPartition, metadata...
                if time.monotonic() > deadline:
                    raise StateUnavailableError(
                        f"no end offset for {self.topic!r}: {type(exc).__name__}: {exc}"
                    ) from exc
                time.sleep(0.1)

    def _read(
        self,
        start: int | None,
        stop: int | None,
        deadline: float,
        on_record: Callable[[int, bytes | None, bytes | None], None],
    ) -> int:
        """Feed records from ``start`` (``None``: the beginning) to ``on_record`` until the
        position reaches ``stop`` (``None``: the end offset now); returns the position reached.

        Whole fetched batches are processed (``max_records`` large), so a record batch the end
        offset cuts (Tansu's ListOffsets) is still read to its end.
        """
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        tp = TopicPartition(self.topic, 0)
        end = self._end_offset(deadline) if stop is None else stop
        consumer = self._get_consumer()
        try:
            if start is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, start)
            position = consumer.position(tp, timeout_ms=max(1, int((deadline - time.monotonic()) * 1000)))
            if position is None:
                raise StateUnavailableError(f"no position on {self.topic!r}")
            while position < end:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StateUnavailableError(
                        f"read {self.topic!r} only to offset {position} of {end} within {self.timeout_s} s"
                    )
                batch = consumer.poll(timeout_ms=int(min(remaining, 0.5) * 1000), max_records=1_000_000)
                for message in batch.get(tp, []):
                    on_record(message.offset, message.key, message.value)
                position = consumer.position(tp)
            return int(position)
        except KafkaError as exc:
            self._drop_clients()
            raise StateUnavailableError(f"reading {self.topic!r} failed: {exc}") from exc

    def _scan(self, name: str, keep_values: bool) -> StateLog:
        view = StateLog(
            name,
            keep_values=keep_values,
            max_state_bytes=self.max_state_bytes,
            max_message_bytes=self.max_message_bytes,
        )
        view.next_offset = self._read(None, None, self._deadline(), view.apply)
        return view

    def _refresh(self, name: str, deadline: float) -> StateLog:
        """The writer's view of ``name``, brought up to the end (reads only the new records)."""
        view = self._views.get(name)
        if view is not None and self._end_offset(deadline) < view.next_offset:
            log.warning("topic %s is shorter than what was read of it: reading it again", self.topic)
            view = None
        if view is None:
            view = self._scan(name, keep_values=False)
        else:
            view.next_offset = self._read(view.next_offset, None, deadline, view.apply)
        self._views[name] = view
        return view

    def load(self, name: str) -> StoredState | None:
        """The newest verified state of ``name`` (highest epoch, version), or ``None`` if none.

        Reads the whole partition (see the module docs for cost and memory). Raises
        :class:`DamagedStateError` (with ``.previous``) if the newest version does not verify,
        :class:`StateUnavailableError` if the broker does not answer within ``timeout_s``.
        """
        _check_name(name)
        with self._lock:
            view = self._scan(name, keep_values=True)
            self._views[name] = view.without_values()
            return choose(view)

    def latest_epoch(self, name: str) -> int | None:
        """The highest epoch of any manifest of ``name`` (``None`` if none): a new writer uses +1."""
        _check_name(name)
        with self._lock:
            return self._refresh(name, self._deadline()).highest_epoch

    def head(self, name: str) -> Manifest | None:
        """The manifest readers prefer now, without reading the data (a cheap "changed?" poll)."""
        _check_name(name)
        with self._lock:
            return self._refresh(name, self._deadline()).best

    # ------------------------------------------------------------------ writing
    def _send(self, records: Iterable[tuple[bytes, bytes | None]], deadline: float) -> list[int]:
        """Produce ``records`` to partition 0, flush, and return their offsets (all acknowledged)."""
        from kafka.errors import KafkaError

        records = list(records)
        for key, value in records:
            size = message_size(key, value)
            if size > self.max_message_bytes:  # plan_save and the chunk size make this impossible
                raise AssertionError(f"message {key!r} of {size} bytes over the bound")
        producer = self._get_producer()
        try:
            futures = []
            queued = 0
            for key, value in records:
                futures.append(producer.send(self.topic, key=key, value=value, partition=0))
                queued += len(value or b"")
                if queued >= SEND_WINDOW_BYTES:  # bound what waits in the producer
                    producer.flush(timeout=max(0.001, deadline - time.monotonic()))
                    queued = 0
            producer.flush(timeout=max(0.001, deadline - time.monotonic()))
            return [int(f.get(timeout=max(0.001, deadline - time.monotonic())).offset) for f in futures]
        except KafkaError as exc:
            self._drop_clients()  # a fresh producer next time: nothing queued from this save
            raise StateUnavailableError(
                f"writing to {self.topic!r} failed, not acknowledged: {type(exc).__name__}: {exc}"
            ) from exc

    def save(self, name: str, blob: bytes, *, epoch: int, meta: dict[str, Any] | None = None) -> int:
        """Save ``blob`` as the next version of ``name``; return that version.

        Chunks go to the free slot and are acknowledged before the manifest is written and
        acknowledged: if this raises, readers still get the previous version (or, for a
        :class:`StateUnavailableError` raised while the manifest was in flight, possibly this
        one, complete). Raises :class:`StaleEpochError`, :class:`ConcurrentWriteError`,
        :class:`StateUnavailableError` or, for bad arguments, ``ValueError``.
        """
        _check_name(name)
        _counter(epoch, "epoch")
        with self._lock:
            deadline = self._deadline()
            return self._save(name, blob, epoch, meta, self._refresh(name, deadline), deadline)[0]

    def _save(
        self, name: str, blob: bytes, epoch: int, meta: dict[str, Any] | None, view: StateLog, deadline: float
    ) -> tuple[int, int]:
        """:meth:`save` with the lock held and ``view`` refreshed: ``(version, manifest offset)``."""
        plan = plan_save(
            view, blob, epoch=epoch, meta=meta, chunk_bytes=self.chunk_bytes, token=os.urandom(16)
        )
        start = view.next_offset
        offsets = self._send(plan.records, deadline)
        ours = dict(zip(offsets, plan.records, strict=True))
        for offset, (key, value) in ours.items():
            view.apply(offset, key, value)
        view.next_offset = self._check_alone(view, plan, start, ours, deadline)
        (manifest_offset,) = self._send([(manifest_key(name), plan.manifest.encode())], deadline)
        view.apply(manifest_offset, manifest_key(name), plan.manifest.encode())
        if manifest_offset == view.next_offset:
            view.next_offset = manifest_offset + 1
        return plan.manifest.version, manifest_offset

    def claim(
        self, name: str, blob: bytes, *, min_epoch: int = 0, meta: dict[str, Any] | None = None
    ) -> tuple[int, int]:
        """Save ``blob`` with a new epoch that no other writer holds; return ``(epoch, version)``.

        The epoch is one more than the highest of any manifest of ``name`` (at least
        ``min_epoch``). Two writers may compute the same epoch at the same time; the first
        manifest of an epoch in the log owns it, so after its manifest is acknowledged the
        claim reads on to the end: if another writer's manifest of that epoch came first, it
        raises :class:`ConcurrentWriteError` (the winner's next save supersedes this version;
        the loser must not write with that epoch again). Raises what :meth:`save` raises.
        """
        _check_name(name)
        _counter(min_epoch, "min_epoch")
        with self._lock:
            deadline = self._deadline()
            view = self._refresh(name, deadline)
            highest = view.highest_epoch
            epoch = min_epoch if highest is None else max(min_epoch, highest + 1)
            version, offset = self._save(name, blob, epoch, meta, view, deadline)
            view = self._refresh(name, deadline)
            first = view.first_manifest_offset(epoch)
            if first is not None and first < offset:
                raise ConcurrentWriteError(
                    f"state {name!r}: epoch {epoch} was claimed first by "
                    f"another writer (offset {first}); this claim "
                    f"(version {version}) lost"
                )
            return epoch, version

    def _check_alone(
        self,
        view: StateLog,
        plan: SavePlan,
        start: int,
        ours: dict[int, tuple[bytes, bytes | None]],
        deadline: float,
    ) -> int:
        """Read what others appended since ``start`` around our own records; raise on a conflict.

        Returns the offset read up to.
        """
        mine = {key: offset for offset, (key, value) in ours.items() if value is not None}
        epoch, version = plan.manifest.epoch, plan.manifest.version
        newer: list[Manifest] = []  # manifests of a higher epoch written meanwhile
        clashes: list[str] = []

        def foreign(offset: int, key: bytes | None, value: bytes | None) -> None:
            if offset in ours:
                return
            view.apply(offset, key, value)
            kind = parse_key(view.name, key)
            if kind is None:
                return
            if kind[0] == "manifest" and value is not None:
                try:
                    other = Manifest.decode(
                        value,
                        view.name,
                        max_state_bytes=self.max_state_bytes,
                        max_bytes=self.max_message_bytes,
                    )
                except CheckpointError:
                    return
                if other.epoch > epoch:
                    newer.append(other)
                elif other.version >= version:
                    clashes.append(f"another writer saved version {other.version}")
            elif key in mine and offset > mine[key]:
                clashes.append(f"another write to {key.decode()} at offset {offset}")

        position = self._read_around(start, ours, deadline, foreign)
        if newer:
            other = max(newer, key=lambda m: m.rank)
            raise StaleEpochError(
                f"state {view.name!r}: a writer with epoch {other.epoch} saved "
                f"version {other.version} during this save (epoch {epoch}); "
                f"not publishing"
            )
        if clashes:
            raise ConcurrentWriteError(
                f"state {view.name!r}: {clashes[0]} during this save "
                f"({len(clashes)} conflicting records); not publishing"
            )
        return position

    def _read_around(
        self,
        start: int,
        ours: dict[int, tuple[bytes, bytes | None]],
        deadline: float,
        on_record: Callable[[int, bytes | None, bytes | None], None],
    ) -> int:
        """Read the records from ``start`` to the end that are not ``ours`` (the gaps between
        our offsets, then what follows the last), without fetching ours again where possible."""
        last = max(ours, default=start - 1)
        gap_start: int | None = None
        for offset in range(start, last + 1):
            if offset not in ours and gap_start is None:
                gap_start = offset
            elif offset in ours and gap_start is not None:
                self._read(gap_start, offset, deadline, on_record)
                gap_start = None
        return self._read(max(start, last + 1), None, deadline, on_record)


# ---------------------------------------------------------------------------------- following
class StateFollower:
    """Follow one name on a state topic, reading each record once: :meth:`poll` returns the
    newest verified state whenever it ranks above the last one returned.

    For readers that ask often (instances following model snapshots), where
    :meth:`KafkaStateStore.load` would read the whole partition on every call: the follower
    keeps its own consumer's position and a :class:`StateLog` with values of what it read
    (so the same memory bound, about two states), and each :meth:`poll` applies only the
    records appended since the last. A version's chunks precede its manifest in the log, so a
    manifest can be verified as soon as it is read.

    * Nothing is returned before the follower has read up to the end offset it saw at its
      first poll: a new reader starts from the newest state, not from each older one in turn.
    * Only a state of a higher ``(epoch, version)`` than the last one returned is returned
      (:attr:`returned`): a superseded writer's manifest that reaches the log after a higher
      epoch's is never returned after it.
    * A newest version that does not verify is logged and counted (:attr:`n_damaged`); the
      newest older one that verifies is returned instead if it still ranks above
      :attr:`returned`.
    * Broker errors are logged and retried after a backoff (0.5 s doubling to 30 s: a poll
      before then does no I/O), with a new consumer; a missing topic reads as an empty one
      (its end offset is asked again after a backoff too). Nothing here raises for what the
      topic holds or for the broker.

    Parameters
    ----------
    bootstrap_servers, topic, name
        Where the state is: brokers, the (1-partition) topic, the state's name.
    max_state_bytes, max_message_bytes
        As for :class:`KafkaStateStore`.
    request_timeout_ms
        The consumer's request timeout (the first poll's end-offset request waits at most
        this long).
    client_options
        Extra kafka-python consumer settings (security, ``client_id``...).
    """

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        topic: str,
        name: str,
        *,
        max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        request_timeout_ms: int = 30000,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.name = _check_name(name)
        self.max_state_bytes = max_state_bytes
        self.max_message_bytes = max_message_bytes
        self.request_timeout_ms = max(1000, int(request_timeout_ms))
        self.client_options = dict(client_options or {})
        #: ``(epoch, version)`` of the last state returned (``None``: none yet).
        self.returned: tuple[int, int] | None = None
        #: Newest versions that did not verify.
        self.n_damaged = 0
        self._view = self._new_view()
        self._consumer: Any = None
        self._position = 0  # the offset after the last record applied
        self._end: int | None = None  # read up to here before offering a first state
        self._next_end_try = 0.0
        self._end_backoff = 0.5
        self._retry_at = 0.0  # no broker I/O before then (after an error)
        self._backoff = 0.25
        self._tried = -1  # offset of the newest manifest record already looked at
        self._lock = threading.Lock()

    def _new_view(self) -> StateLog:
        return StateLog(
            self.name,
            keep_values=True,
            max_state_bytes=self.max_state_bytes,
            max_message_bytes=self.max_message_bytes,
        )

    @property
    def caught_up(self) -> bool:
        """Whether the follower has read up to the end offset seen at its first poll."""
        return self._end is not None and self._position >= self._end

    def _get_consumer(self) -> Any:
        if self._consumer is None:
            from kafka import TopicPartition

            self._consumer = _reader(
                self.bootstrap_servers, self.max_message_bytes, self.request_timeout_ms, self.client_options
            )
            tp = TopicPartition(self.topic, 0)
            self._consumer.assign([tp])
            self._consumer.seek(tp, self._position)
        return self._consumer

    def close(self) -> None:
        """Close the consumer (a later :meth:`poll` makes a new one and goes on from where
        this one stopped)."""
        with self._lock:
            self._drop_consumer()

    def _drop_consumer(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception:  # closing a broken client must not hide what happened
                log.debug("closing the follower's consumer failed", exc_info=True)
            self._consumer = None

    def poll(self, timeout_s: float = 0.0) -> StoredState | None:
        """Read what was appended since the last call (waiting up to ``timeout_s`` seconds
        for a newer state); return the newest verified state if it ranks above
        :attr:`returned`, else ``None``."""
        deadline = time.monotonic() + max(0.0, float(timeout_s))
        with self._lock:
            while True:
                self._read(deadline)
                found = self._newer()
                if found is not None or time.monotonic() >= deadline:
                    return found

    def _read(self, deadline: float) -> None:
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        tp = TopicPartition(self.topic, 0)
        now = time.monotonic()
        if now < self._retry_at:  # after a broker error: no I/O before the backoff ends
            time.sleep(max(0.0, min(self._retry_at, deadline) - now))
            return
        try:
            consumer = self._get_consumer()
            if self._end is None and now >= self._next_end_try:
                # bounded: a caller polling with no timeout must not wait long on a missing topic
                wait_ms = min(self.request_timeout_ms, max(500, int((deadline - now) * 1000)))
                try:
                    self._end = int(consumer.end_offsets([tp], timeout_ms=wait_ms)[tp])
                except KafkaError as exc:  # no topic yet, or no answer: asked again later
                    self._end_backoff = min(2 * self._end_backoff, 30.0)
                    self._next_end_try = time.monotonic() + self._end_backoff
                    log.debug("no end offset for %s yet: %s", self.topic, exc)
            wait_ms = int(max(0.0, min(deadline - time.monotonic(), 0.5)) * 1000)
            batch = consumer.poll(timeout_ms=wait_ms, max_records=100_000)
        except KafkaError as exc:
            self._backoff = min(2 * self._backoff, 30.0)
            self._retry_at = time.monotonic() + self._backoff
            log.warning(
                "following %s failed (%s: %s); retrying in %.1f s",
                self.topic,
                type(exc).__name__,
                exc,
                self._backoff,
            )
            self._drop_consumer()
            return
        self._backoff = 0.25
        for message in batch.get(tp, []):
            if message.offset < self._position:  # a record read before (after a reconnect)
                continue
            self._position = message.offset + 1
            try:
                self._view.apply(message.offset, message.key, message.value)
            except CheckpointError as exc:  # more chunk data than two states: start over here
                log.error(
                    "state %r on %s: %s; forgetting what was read before offset %d",
                    self.name,
                    self.topic,
                    exc,
                    message.offset,
                )
                self._view = self._new_view()
                self._tried = message.offset
        if not batch and self._end is not None and self._position < self._end:
            try:  # a compacted log may end in removed offsets: trust the consumer's position
                self._position = max(self._position, int(consumer.position(tp, timeout_ms=0) or 0))
            except Exception:  # the position is not known yet
                log.debug("no position on %s yet", self.topic, exc_info=True)

    def _newer(self) -> StoredState | None:
        view = self._view
        if not self.caught_up or view.last_manifest_offset <= self._tried:
            return None
        self._tried = view.last_manifest_offset
        best = view.best
        if best is None or (self.returned is not None and best.rank <= self.returned):
            return None
        try:
            found = choose(view)
        except DamagedStateError as exc:
            self.n_damaged += 1
            log.error("state %r on %s: %s", self.name, self.topic, exc)
            found = exc.previous
        except CheckpointError as exc:  # not expected from choose; never stops the reader
            self.n_damaged += 1
            log.error("state %r on %s: %s", self.name, self.topic, exc)
            found = None
        if found is None or (self.returned is not None and (found.epoch, found.version) <= self.returned):
            return None
        self.returned = (found.epoch, found.version)
        return found
