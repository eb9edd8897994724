"""The pure logic of :mod:`consumers.kafka_state`, without a broker: keys, chunk headers,
manifests, the log view, the choice of the version to load, and whole save sequences played on
an in-memory log (a list of ``(key, value)`` records whose index is the offset).

The broker-backed store is tested in ``tests/test_kafka_state_integration.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random

import pytest

from consumers.kafka_state import (
    CHUNK_HEADER_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_META_BYTES,
    DamagedStateError,
    KafkaStateStore,
    Manifest,
    StaleEpochError,
    StateLog,
    check_meta,
    choose,
    chunk_key,
    decode_chunk,
    encode_chunk,
    manifest_key,
    message_size,
    parse_key,
    plan_save,
)
from streamdas.checkpoint import CheckpointError

Record = tuple[bytes, "bytes | None"]


class MemoryLog:
    """An append-only partition in memory; ``save`` plays :class:`KafkaStateStore.save`'s steps."""

    def __init__(self, chunk_bytes: int = 10, max_state_bytes: int = 10_000) -> None:
        self.records: list[Record] = []
        self.chunk_bytes = chunk_bytes
        self.max_state_bytes = max_state_bytes

    def view(
        self, name: str = "s", keep_values: bool = True, records: list[Record] | None = None
    ) -> StateLog:
        view = StateLog(name, keep_values=keep_values, max_state_bytes=self.max_state_bytes)
        for offset, (key, value) in enumerate(self.records if records is None else records):
            view.apply(offset, key, value)
        return view

    def load(self, name: str = "s") -> object:
        return choose(self.view(name))

    def save(
        self, blob: bytes, epoch: int = 0, meta: dict | None = None, name: str = "s", publish: bool = True
    ) -> Manifest:
        plan = plan_save(
            self.view(name, keep_values=False),
            blob,
            epoch=epoch,
            meta=meta,
            chunk_bytes=self.chunk_bytes,
            token=os.urandom(16),
        )
        self.records += plan.records
        if publish:  # publish=False: the writer dies after its chunks, before the manifest
            self.records.append((manifest_key(name), plan.manifest.encode()))
        return plan.manifest

    def compacted(self, drop_tombstones: bool = False) -> list[Record]:
        """Kafka compaction: the newest record per key, in log order (tombstones optional)."""
        last = {key: i for i, (key, _) in enumerate(self.records)}
        return [
            (k, v)
            for i, (k, v) in enumerate(self.records)
            if last[k] == i and not (drop_tombstones and v is None)
        ]

    def corrupt(self, key: bytes, flip_at: int = -1) -> None:
        """Flip one bit in the newest value of ``key`` (in place: a broken disk, not a write)."""
        i = max(i for i, (k, _) in enumerate(self.records) if k == key)
        value = bytearray(self.records[i][1])
        value[flip_at] ^= 1
        self.records[i] = (key, bytes(value))


def blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


# ------------------------------------------------------------------------------- keys, chunks
def test_keys_round_trip_and_foreign_keys_are_ignored():
    assert parse_key("a.b-c_1", chunk_key("a.b-c_1", 1, 123)) == ("chunk", 1, 123)
    assert parse_key("a", manifest_key("a")) == ("manifest", 0, 0)
    for key in (
        None,
        b"a",
        b"a/",
        b"b/manifest",
        b"a/slot-0/",
        b"a/slot-0/01",
        b"a/slot-0/-1",
        b"a/slot-0/1/2",
        b"a/slot-0/1234567890",
        b"a/manifest2",
        b"a/\xff",
        b"ab/slot-0/0",
    ):
        assert parse_key("a", key) is None, key


@pytest.mark.parametrize("name", ["", "/x", "a/b", "a b", ".x", "x" * 201, "é", None])
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError, match="state name"):
        manifest_key(name)


def test_a_chunk_round_trips_and_every_damage_is_caught():
    token = os.urandom(16)
    value = encode_chunk(token, 9, 3, 7, b"payload")
    header, payload = decode_chunk(value)
    assert (header.token, header.version, header.index, header.n_chunks, payload) == (
        token,
        9,
        3,
        7,
        b"payload",
    )
    assert len(value) == CHUNK_HEADER_BYTES + len(b"payload")
    for i in range(len(value)):  # any single bit flip anywhere is detected
        broken = bytearray(value)
        broken[i] ^= 0x10
        try:
            h, _ = decode_chunk(bytes(broken))
        except CheckpointError:
            continue
        # a flip in a header field the CRC does not cover decodes, but to other header fields
        assert (h.token, h.version, h.index, h.n_chunks) != (token, 9, 3, 7)
    with pytest.raises(CheckpointError, match="too short"):
        decode_chunk(value[: CHUNK_HEADER_BYTES - 1])


# ------------------------------------------------------------------------------- manifests
def _manifest(**changes) -> dict:
    data = Manifest(
        "a",
        epoch=1,
        version=2,
        slot=0,
        n_chunks=2,
        chunk_bytes=4,
        length=6,
        sha256="ab" * 32,
        token="cd" * 16,
        meta={"offsets": {"in:0": 5}},
    ).to_json()
    data.update(changes)
    return data


def _decode(data) -> Manifest:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return Manifest.decode(raw, "a", max_state_bytes=1000)


def test_a_manifest_round_trips_with_its_previous():
    previous = _decode(_manifest(slot=1, version=1))
    m = dataclasses.replace(_decode(_manifest()), previous=previous)
    assert _decode(m.encode()) == m
    assert _decode(m.encode()).previous.version == 1


@pytest.mark.parametrize(
    "data, why",
    [
        (b"\xff\xfe", "utf-8"),
        (b"not json", "Expecting value"),
        (b"[1, 2]", "JSON object"),
        (b'{"epoch": NaN}', "non-finite"),
        (b"[" * 100_000 + b"]" * 100_000, "recursion"),
        (_manifest(extra=1), "unknown"),
        (_manifest(format=2), "format"),
        (_manifest(format=True), "format"),
        (_manifest(name="b"), "under the key"),
        (_manifest(epoch=-1), "epoch"),
        (_manifest(epoch=1.0), "epoch"),
        (_manifest(epoch=True), "epoch"),
        (_manifest(epoch=2**63), "epoch"),
        (_manifest(version=0), "version"),
        (_manifest(slot=2), "slot"),
        (_manifest(length=1001), "length"),
        (_manifest(n_chunks=3), "chunks for"),
        (_manifest(chunk_bytes=0), "chunk_bytes"),
        (_manifest(sha256="AB" * 32), "sha256"),
        (_manifest(token="cd" * 15), "token"),
        (_manifest(meta=[1]), "meta"),
        (_manifest(meta={"a": [[[[1]]]] * 1}, previous=_manifest(slot=0, version=1)), "same slot"),
        (_manifest(previous=_manifest(slot=1, version=3)), "not older"),
        (_manifest(previous=_manifest(slot=1, version=1, previous=_manifest(version=0))), "previous"),
        (_manifest(previous="x"), "JSON object"),
    ],
)
def test_a_bad_manifest_is_a_checkpoint_error(data, why):
    with pytest.raises(CheckpointError, match=f"(?i)bad manifest.*{why}"):
        _decode(data)


def test_a_manifest_over_the_message_bound_is_refused_before_parsing():
    with pytest.raises(CheckpointError, match="more than"):
        Manifest.decode(b" " * 2000, "a", max_state_bytes=10, max_bytes=1000)


def test_meta_must_be_plain_bounded_json():
    assert check_meta(None) == {}
    assert check_meta({"a": (1, 2), "b": {"c": None}}) == {"a": [1, 2], "b": {"c": None}}
    for bad in ({1: 2}, {"a": object()}, {"a": b"x"}, {"a": float("inf")}, [1], {"a": "x" * MAX_META_BYTES}):
        with pytest.raises(ValueError):
            check_meta(bad)
    nested: dict = {}
    inner = nested
    for _ in range(40):
        inner["a"] = {}
        inner = inner["a"]
    with pytest.raises(ValueError, match="deeper"):
        check_meta(nested)


# ------------------------------------------------------------------------------- save sequences
def test_round_trip_of_a_multi_chunk_state_with_meta():
    log = MemoryLog(chunk_bytes=10)
    data = blob(95)
    manifest = log.save(data, epoch=3, meta={"offsets": {"in:0": 17}})
    assert manifest.n_chunks == 10
    state = log.load()
    assert (state.blob, state.epoch, state.version, state.meta) == (data, 3, 1, {"offsets": {"in:0": 17}})


def test_no_manifest_means_no_state_and_other_names_do_not_interfere():
    log = MemoryLog()
    assert log.load() is None
    log.save(b"other", name="t")
    log.save(b"", name="s")  # an empty state is a state
    assert log.load("s").blob == b""
    assert log.load("t").blob == b"other"
    assert log.load("u") is None


def test_many_versions_alternate_slots_and_count_up():
    log = MemoryLog(chunk_bytes=7)
    for v in range(1, 21):
        data = blob(v * 5, seed=v)
        manifest = log.save(data, epoch=0)
        assert (manifest.version, manifest.slot) == (v, (v - 1) % 2)
        assert manifest.previous is None or manifest.previous.version == v - 1
        state = log.load()
        assert (state.version, state.blob) == (v, data)


def test_a_crash_before_the_manifest_leaves_the_previous_version():
    log = MemoryLog(chunk_bytes=10)
    log.save(blob(50, 1))
    log.save(blob(80, 2))
    log.save(blob(120, 3), publish=False)  # chunks written into slot 0, no manifest
    state = log.load()
    assert (state.version, state.blob) == (2, blob(80, 2))
    # the next save reuses the free slot, tombstoning what the crashed write left beyond it
    before = len(log.records)
    m = log.save(blob(30, 4))
    assert (m.version, m.slot) == (3, 0)
    tombstoned = {k for k, v in log.records[before:] if v is None}
    assert tombstoned == {chunk_key("s", 0, i) for i in range(3, 12)}
    assert log.load().blob == blob(30, 4)


def test_a_longer_state_then_a_shorter_one():
    log = MemoryLog(chunk_bytes=10)
    log.save(blob(200, 1))  # slot 0, 20 chunks
    log.save(blob(15, 2))  # slot 1
    m = log.save(blob(25, 3))  # slot 0 again: chunks 3..19 are tombstoned
    assert m.slot == 0 and m.n_chunks == 3
    assert {k for k, v in log.records if v is None} == {chunk_key("s", 0, i) for i in range(3, 20)}
    assert log.view(keep_values=False).live_chunks(0) == {0, 1, 2}
    assert log.load().blob == blob(25, 3)
    records = log.compacted(drop_tombstones=True)
    assert sum(1 for k, _ in records if parse_key("s", k)) == 3 + 2 + 1
    assert log.load() == choose(log.view(records=records))


def test_a_damaged_newest_version_offers_the_previous_one_never_a_wrong_blob():
    log = MemoryLog(chunk_bytes=10)
    log.save(blob(45, 1), meta={"at": 1})
    m2 = log.save(blob(45, 2), meta={"at": 2})
    log.corrupt(chunk_key("s", m2.slot, 2))
    with pytest.raises(DamagedStateError, match=r"version 2 .*chunk 2.*CRC-32.*version 1") as info:
        log.load()
    assert info.value.version == 2
    assert (info.value.previous.blob, info.value.previous.meta) == (blob(45, 1), {"at": 1})
    # the previous one damaged too: nothing is offered
    log.corrupt(chunk_key("s", 1 - m2.slot, 0), flip_at=CHUNK_HEADER_BYTES)
    with pytest.raises(DamagedStateError, match="no older version") as info:
        log.load()
    assert info.value.previous is None


@pytest.mark.parametrize("how", ["missing", "other write", "truncated", "reordered", "bad manifest"])
def test_every_kind_of_damage_is_named(how):
    log = MemoryLog(chunk_bytes=10)
    log.save(blob(30, 1))
    m = log.save(blob(30, 2))
    key0, key1 = chunk_key("s", m.slot, 0), chunk_key("s", m.slot, 1)
    values = dict(log.records)
    if how == "missing":
        log.records.append((key1, None))
        why = "chunk 1 .* missing"
    elif how == "other write":
        log.records.append((key1, encode_chunk(os.urandom(16), 2, 1, 3, b"x" * 10)))
        why = "another write"
    elif how == "truncated":
        _, payload = decode_chunk(values[key1])
        log.records.append((key1, encode_chunk(bytes.fromhex(m.token), 2, 1, 3, payload[:5])))
        why = "holds 5 bytes"
    elif how == "reordered":
        log.records += [(key0, values[key1]), (key1, values[key0])]
        why = "says version 2, chunk 1"
    else:
        log.records.append((manifest_key("s"), b"{garbage"))
        why = "manifest at offset .* unreadable"
    with pytest.raises(DamagedStateError, match=why) as info:
        log.load()
    assert info.value.previous.blob == (blob(30, 2) if how == "bad manifest" else blob(30, 1))


def test_the_sha256_catches_what_the_headers_cannot():
    log = MemoryLog(chunk_bytes=10)
    log.save(blob(20, 1))
    m = log.save(blob(20, 2))
    manifest = Manifest.decode(log.records[-1][1], "s", max_state_bytes=100)
    log.records.append(
        (manifest_key("s"), dataclasses.replace(manifest, sha256=hashlib.sha256(b"x").hexdigest()).encode())
    )
    with pytest.raises(DamagedStateError, match=f"version {m.version} fails its SHA-256"):
        log.load()


def test_the_fallback_survives_compaction_through_the_embedded_previous():
    log = MemoryLog(chunk_bytes=10)
    for i in range(5):
        log.save(blob(33, i))
    m = log.save(blob(33, 9))
    log.records = log.compacted(drop_tombstones=True)
    assert sum(1 for k, _ in log.records if k == manifest_key("s")) == 1
    assert log.load().blob == blob(33, 9)
    log.corrupt(chunk_key("s", m.slot, 0))
    with pytest.raises(DamagedStateError) as info:
        log.load()
    assert (info.value.previous.version, info.value.previous.blob) == (5, blob(33, 4))


def test_a_deleted_state_loads_as_none():
    log = MemoryLog()
    log.save(b"abc")
    log.records.append((manifest_key("s"), None))
    assert log.load() is None
    assert log.save(b"again").version == 2
    assert log.load().blob == b"again"


# ------------------------------------------------------------------------------- epochs
def _zombie_save(log: MemoryLog, seen: int, data: bytes, epoch: int) -> Manifest:
    """A save by a writer that read only the first ``seen`` records (the race window of a save
    from a superseded writer: its view predates the newer writer's manifests)."""
    view = log.view(keep_values=False, records=log.records[:seen])
    plan = plan_save(view, data, epoch=epoch, meta=None, chunk_bytes=log.chunk_bytes, token=os.urandom(16))
    log.records += [*plan.records, (manifest_key("s"), plan.manifest.encode())]
    return plan.manifest


def test_a_writer_below_the_highest_epoch_cannot_plan_a_save():
    log = MemoryLog(chunk_bytes=10)
    log.save(blob(30, 1), epoch=1)
    log.save(blob(30, 2), epoch=2)
    with pytest.raises(StaleEpochError, match=r"epoch 1 is below .* epoch 2"):
        log.save(blob(30, 3), epoch=1)


def test_a_lower_epoch_save_after_a_higher_one_is_not_loaded():
    log = MemoryLog(chunk_bytes=10)
    log.save(blob(30, 1), epoch=1)
    seen = len(log.records)
    log.save(blob(30, 2), epoch=2)  # v2, slot 1
    log.save(blob(30, 3), epoch=2)  # v3, slot 0
    zombie = _zombie_save(log, seen, blob(30, 9), epoch=1)  # based on v1: writes slot 1
    assert (zombie.epoch, zombie.version, zombie.slot) == (1, 2, 1)
    state = log.load()
    assert (state.epoch, state.version, state.blob) == (2, 3, blob(30, 3))
    assert log.view().fenced(len(log.records) - 1, zombie)
    assert log.save(blob(30, 4), epoch=2).version == 4


def test_a_zombie_that_clobbers_the_newest_slot_is_never_offered_as_the_fallback():
    log = MemoryLog(chunk_bytes=10)
    log.save(blob(30, 1), epoch=1)  # v1, slot 0
    seen = len(log.records)
    log.save(blob(30, 2), epoch=2)  # v2, slot 1
    _zombie_save(log, seen, blob(30, 9), epoch=1)  # also based on v1: overwrites slot 1
    with pytest.raises(DamagedStateError, match=r"version 2 .*another write") as info:
        log.load()
    previous = info.value.previous  # the zombie's complete state is not it: v1 is
    assert (previous.epoch, previous.version, previous.blob) == (1, 1, blob(30, 1))


def test_equal_epochs_may_save_again():
    log = MemoryLog()
    log.save(b"a", epoch=4)
    assert log.save(b"b", epoch=4).version == 2
    assert log.save(b"c", epoch=5).version == 3
    assert log.view().highest_epoch == 5


def test_plan_refuses_bad_arguments():
    view = StateLog("s", keep_values=False, max_state_bytes=10)
    for kwargs, why in (
        ({"epoch": -1}, "epoch"),
        ({"epoch": True}, "epoch"),
        ({"blob": "text"}, "bytes"),
        ({"blob": b"x" * 11}, "max_state_bytes"),
        ({"meta": {"a": {1}}}, "plain JSON"),
    ):
        args = {"blob": b"x", "epoch": 0, "meta": None, **kwargs}
        with pytest.raises(ValueError, match=why):
            plan_save(view, args.pop("blob"), chunk_bytes=4, token=b"t" * 16, **args)


# ------------------------------------------------------------------------------- properties
def _history(log: MemoryLog, rng: random.Random, n: int) -> list[tuple[int, bytes]]:
    """``n`` saves of random sizes (some crashing before their manifest), epochs rising."""
    published = []
    epoch = 0
    for i in range(n):
        epoch += rng.random() < 0.2
        data = blob(rng.choice([0, 1, 9, 10, 11, 55, 120]), seed=rng.randrange(10**6))
        publish = rng.random() > 0.25
        m = log.save(data, epoch=epoch, publish=publish, meta={"i": i})
        if publish:
            published.append((len(log.records) - 1, data, m.version))
    return published


@pytest.mark.parametrize("seed", range(8))
def test_every_prefix_of_the_log_loads_its_last_published_version(seed):
    """A reader that stops anywhere (a crash, a read up to some end) sees a consistent state."""
    rng = random.Random(seed)
    log = MemoryLog(chunk_bytes=10)
    published = _history(log, rng, 12)
    for end in range(len(log.records) + 1):
        done = [(d, v) for at, d, v in published if at < end]
        state = choose(log.view(records=log.records[:end]))
        if not done:
            assert state is None
        else:
            assert (state.blob, state.version) == done[-1]


@pytest.mark.parametrize("seed", range(8))
def test_order_of_application_does_not_matter(seed):
    rng = random.Random(seed)
    log = MemoryLog(chunk_bytes=10)
    _history(log, rng, 10)
    expected = log.load()
    indexed = list(enumerate(log.records))
    rng.shuffle(indexed)
    view = StateLog("s", keep_values=True, max_state_bytes=log.max_state_bytes)
    for offset, (key, value) in indexed + indexed[: len(indexed) // 2]:  # some twice
        view.apply(offset, key, value)
    assert choose(view) == expected


@pytest.mark.parametrize("seed", range(6))
def test_random_damage_never_yields_a_wrong_blob(seed):
    rng = random.Random(seed)
    log = MemoryLog(chunk_bytes=10)
    published = _history(log, rng, 8)
    good = {v: d for _, d, v in published}
    for _ in range(60):
        records = list(log.records)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(records))
            key, value = records[i]
            if value:
                broken = bytearray(value)
                broken[rng.randrange(len(broken))] ^= 1 << rng.randrange(8)
                records[i] = (key, bytes(broken))
        try:
            state = choose(log.view(records=records))
        except DamagedStateError as exc:
            state = exc.previous
        except CheckpointError:
            continue
        if state is not None:
            assert good[state.version] == state.blob


def test_the_view_refuses_more_chunk_data_than_two_states():
    view = StateLog("s", keep_values=True, max_state_bytes=100, max_message_bytes=100)
    value = b"x" * (CHUNK_HEADER_BYTES + 10)  # 10 payload bytes; headers do not count
    for i in range(40):  # 400 payload bytes: the bound, 2 * (100 + 100)
        view.apply(i, chunk_key("s", i % 2, i), value)
    for i in range(40):  # replacing a value does not add up
        view.apply(100 + i, chunk_key("s", i % 2, i), value)
    with pytest.raises(CheckpointError, match="more chunk data"):
        view.apply(200, chunk_key("s", 0, 999), value)


def test_an_oversized_chunk_value_is_kept_as_damage_not_as_data():
    log = MemoryLog(chunk_bytes=10)
    log.save(b"a" * 10)
    m = log.save(b"b" * 10)
    log.records.append((chunk_key("s", m.slot, 0), b"y" * 20_000))
    view = StateLog("s", keep_values=True, max_state_bytes=100, max_message_bytes=10_000)
    for offset, (key, value) in enumerate(log.records):
        view.apply(offset, key, value)
    with pytest.raises(DamagedStateError) as info:
        choose(view)
    assert info.value.previous.blob == b"a" * 10


# ------------------------------------------------------------------------------- message sizes
def test_every_message_of_the_largest_chunks_fits_the_default_bound():
    store = KafkaStateStore("unused:9092", "t")  # no connection until used
    biggest = store.chunk_bytes
    key = chunk_key("n" * 200, 1, 10**9 - 1)
    assert message_size(key, b"x" * (CHUNK_HEADER_BYTES + biggest)) < DEFAULT_MAX_MESSAGE_BYTES
    # the largest chunk the constructor allows still fits; one byte more is refused
    low, high = biggest, DEFAULT_MAX_MESSAGE_BYTES
    while low < high:
        mid = (low + high + 1) // 2
        try:
            KafkaStateStore("unused:9092", "t", chunk_bytes=mid)
            low = mid
        except ValueError:
            high = mid - 1
    assert message_size(key, b"x" * (CHUNK_HEADER_BYTES + low)) <= DEFAULT_MAX_MESSAGE_BYTES
    assert message_size(key, b"x" * (CHUNK_HEADER_BYTES + low + 1)) > DEFAULT_MAX_MESSAGE_BYTES
    assert low > 999_000
    with pytest.raises(ValueError, match="must fit"):
        KafkaStateStore("unused:9092", "t", chunk_bytes=low + 1)
    assert DEFAULT_MAX_MESSAGE_BYTES < 1_048_576  # kafka-python's default max_request_size


def test_the_largest_manifest_fits_the_bound():
    meta = {"x": "y" * (MAX_META_BYTES - 10)}
    assert len(json.dumps(check_meta(meta))) <= MAX_META_BYTES
    log = MemoryLog()
    log.save(b"a", meta=meta, name="n" * 200)
    m = log.save(b"b", meta=meta, name="n" * 200)
    assert m.previous.meta == meta
    assert message_size(manifest_key("n" * 200), m.encode()) < DEFAULT_MAX_MESSAGE_BYTES
