"""The messages the service writes: predictions and dead letters, as standard and bounded JSON.

Every message is standard JSON (RFC 8259: no ``NaN`` or ``Infinity``; a non-finite float is
written as ``null``), and no message is larger than the producer may send
(:func:`message_limit`, from kafka-python's ``max_request_size``): a dead letter carries at most a
prefix of the original value (``--dead-letter-value-bytes``) with the value's full length and
SHA-256, and a prediction that would not fit becomes an ``output_too_large`` dead letter.
The Kafka service and the embedded mode write the same messages (:func:`render`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from consumers.model import BatchResult
from consumers.records import Rejection, clip

__all__ = [
    "DEFAULT_DEAD_LETTER_VALUE_BYTES",
    "DEFAULT_MAX_REQUEST_SIZE",
    "MAX_KEY_BYTES",
    "Origin",
    "Outgoing",
    "dead_letter",
    "dead_letter_payload",
    "dead_letter_value_bytes",
    "encode",
    "message_key",
    "message_limit",
    "prediction_payload",
    "render",
]

#: kafka-python's default ``max_request_size`` (bytes).
DEFAULT_MAX_REQUEST_SIZE = 1_048_576
#: Room left in a request for the record batch's own header and the record's framing.
RECORD_OVERHEAD_BYTES = 1024
#: Longest message key the service passes through; longer keys make the record a dead letter
#: (``oversized_key``) that carries a prefix of this length, as values do.
MAX_KEY_BYTES = 4096
#: Default prefix of the original value a dead letter carries.
DEFAULT_DEAD_LETTER_VALUE_BYTES = 65_536
#: Bytes of a dead letter besides the value prefix: detail (JSON-escaped), key prefix, topic...
DEAD_LETTER_RESERVE_BYTES = 16_384


class Origin(NamedTuple):
    """Where an input record came from (``value`` and ``key`` are its raw bytes)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Outgoing:
    """One message to write: ``kind`` is ``"prediction"`` or ``"dead_letter"``; ``key`` is the
    message key (the input's, or ``None`` when that is too long); ``value`` the JSON bytes."""

    kind: str
    index: int
    key: bytes | None
    value: bytes
    reason: str | None = None


def message_limit(kafka_options: Mapping[str, Any] | None = None) -> int:
    """Largest key plus value the service produces: the producer's ``max_request_size`` (set with
    ``--kafka max_request_size=...``, default 1 MiB) less :data:`RECORD_OVERHEAD_BYTES`.

    Examples
    --------
    >>> message_limit(), message_limit({"max_request_size": 200_000})
    (1047552, 198976)
    """
    size: Any = (kafka_options or {}).get("max_request_size", DEFAULT_MAX_REQUEST_SIZE)
    try:
        size = int(size)
    except (TypeError, ValueError):
        size = DEFAULT_MAX_REQUEST_SIZE
    return max(size - RECORD_OVERHEAD_BYTES, 1)


def dead_letter_value_bytes(configured: int, limit: int) -> int:
    """The value prefix a dead letter may carry: ``configured``, lowered so that the dead letter
    (base64 makes the prefix 4/3 as long) stays within ``limit``.

    Examples
    --------
    >>> dead_letter_value_bytes(65_536, message_limit()), dead_letter_value_bytes(65_536, 50_000)
    (65536, 25212)
    """
    room = max((limit - DEAD_LETTER_RESERVE_BYTES) * 3 // 4, 0)
    return max(min(int(configured), room), 0)


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None`` (dicts and lists walked)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def encode(payload: Mapping[str, Any]) -> bytes:
    """Standard JSON bytes of ``payload``: a non-finite float is written as ``null``, an object
    JSON cannot hold as its ``str``.

    Examples
    --------
    >>> encode({"id": float("inf"), "p": {"a": float("nan"), "b": 0.5}, "n": 3})
    b'{"id":null,"p":{"a":null,"b":0.5},"n":3}'
    """
    try:
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:  # a NaN or an infinity somewhere
        text = json.dumps(_finite(payload), separators=(",", ":"), allow_nan=False, default=str)
    return text.encode("utf-8")


def _key_fields(key: bytes | None) -> dict[str, Any]:
    if key is None:
        return {"key": None}
    try:
        return {"key": bytes(key).decode("utf-8")}
    except UnicodeDecodeError:
        return {"key": None, "key_b64": base64.b64encode(key).decode("ascii")}


def prediction_payload(
    key: bytes | None, topic: str, partition: int, offset: int, body: dict[str, Any]
) -> dict[str, Any]:
    """The JSON object published for one input record.

    Examples
    --------
    >>> prediction_payload(b"k1", "in", 0, 5, {"id": 3, "prediction": 1})
    {'key': 'k1', 'topic': 'in', 'partition': 0, 'offset': 5, 'id': 3, 'prediction': 1}
    """
    payload = _key_fields(key)
    payload.update(topic=topic, partition=partition, offset=offset)
    payload.update(body)
    return payload


def _bytes_fields(name: str, data: bytes | None, prefix: int) -> dict[str, Any]:
    if data is None:
        return {f"{name}_b64": None}
    data = bytes(data)
    return {
        f"{name}_b64": base64.b64encode(data[:prefix]).decode("ascii"),
        f"{name}_len": len(data),
        f"{name}_sha256": hashlib.sha256(data).hexdigest(),
    }


def dead_letter_payload(
    key: bytes | None,
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    rejection: Rejection,
    value_bytes: int = DEFAULT_DEAD_LETTER_VALUE_BYTES,
) -> dict[str, Any]:
    """The JSON object published to the dead-letter topic.

    The original bytes are base64: all of the key up to :data:`MAX_KEY_BYTES` and of the value
    up to ``value_bytes``, each with its full length (``key_len``, ``value_len``) and SHA-256
    (``key_sha256``, ``value_sha256``), so a record can be found again or matched by its
    producer even when only a prefix is kept.

    Examples
    --------
    >>> from consumers.records import Rejection
    >>> p = dead_letter_payload(None, b"oops", "in", 1, 9, Rejection("invalid_json", "..."))
    >>> p["reason"], base64.b64decode(p["value_b64"]), p["value_len"], p["key_b64"]
    ('invalid_json', b'oops', 4, None)
    >>> p = dead_letter_payload(b"k", b"x" * 1000, "in", 1, 9, Rejection("oversized"), 10)
    >>> base64.b64decode(p["value_b64"]), p["value_len"], p["key_len"]
    (b'xxxxxxxxxx', 1000, 1)
    """
    return {
        "reason": rejection.reason,
        "detail": rejection.detail,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        **_bytes_fields("key", key, MAX_KEY_BYTES),
        **_bytes_fields("value", value, max(int(value_bytes), 0)),
    }


def message_key(key: bytes | None) -> bytes | None:
    """The key a message about this input carries: the input's, unless it is too long."""
    return key if key is None or len(key) <= MAX_KEY_BYTES else None


def dead_letter(origin: Origin, rejection: Rejection, *, limit: int, value_bytes: int) -> bytes:
    """The dead letter of ``origin`` as JSON bytes, within ``limit`` with its message key.

    Examples
    --------
    >>> origin = Origin("in", 0, 7, None, b"z" * 5000)
    >>> len(dead_letter(origin, Rejection("oversized"), limit=4000, value_bytes=3000)) <= 4000
    True
    """
    key = message_key(origin.key)
    data = encode(
        dead_letter_payload(
            origin.key, origin.value, origin.topic, origin.partition, origin.offset, rejection, value_bytes
        )
    )
    if len(data) + len(key or b"") > limit:  # a tiny max_request_size: keep only the facts
        small = Rejection(rejection.reason, clip(rejection.detail, 200))
        payload = dead_letter_payload(
            origin.key, origin.value, origin.topic, origin.partition, origin.offset, small, 0
        )
        if payload["key_b64"] is not None:
            payload["key_b64"] = ""
        data = encode(payload)
    return data


def render(
    result: BatchResult,
    origins: Sequence[Origin],
    *,
    limit: int,
    value_bytes: int,
    extra: Mapping[str, Any] | None = None,
) -> list[Outgoing]:
    """The messages of one processed batch, in input order.

    ``origins[i]`` is where ``result``'s index ``i`` came from; ``extra`` is added to every
    prediction (e.g. ``consumer``). A prediction that would exceed ``limit`` becomes an
    ``output_too_large`` dead letter, and ``result`` is updated to say so (it moves from
    ``result.predictions`` to ``result.rejections``), so the counts stay true.

    Examples
    --------
    >>> from consumers.model import BatchResult
    >>> result = BatchResult(predictions=[(0, {"prediction": "x" * 500})],
    ...                      rejections=[(1, Rejection("invalid_json"))])
    >>> origins = [Origin("in", 0, 0, None, b"{}"), Origin("in", 0, 1, None, b"{")]
    >>> [(m.kind, m.reason) for m in render(result, origins, limit=300, value_bytes=100)]
    [('dead_letter', 'output_too_large'), ('dead_letter', 'invalid_json')]
    >>> [r.reason for _, r in result.rejections]
    ['invalid_json', 'output_too_large']
    """
    out: list[Outgoing] = []
    for i, rejection in result.rejections:
        o = origins[i]
        out.append(
            Outgoing(
                "dead_letter",
                i,
                message_key(o.key),
                dead_letter(o, rejection, limit=limit, value_bytes=value_bytes),
                rejection.reason,
            )
        )
    kept: list[tuple[int, dict[str, Any]]] = []
    for i, body in result.predictions:
        o = origins[i]
        payload = prediction_payload(o.key, o.topic, o.partition, o.offset, body)
        payload.update(extra or {})
        data = encode(payload)
        key = message_key(o.key)
        size = len(data) + len(key or b"")
        if size <= limit:
            out.append(Outgoing("prediction", i, key, data))
            kept.append((i, body))
            continue
        learned = "learned" if body.get("learned") else "not learned"
        rejection = Rejection(
            "output_too_large", f"prediction of {size} bytes > {limit} (the record was {learned})"
        )
        result.rejections.append((i, rejection))
        out.append(
            Outgoing(
                "dead_letter",
                i,
                key,
                dead_letter(o, rejection, limit=limit, value_bytes=value_bytes),
                rejection.reason,
            )
        )
    result.predictions[:] = kept
    out.sort(key=lambda m: (m.index, m.kind == "dead_letter"))
    return out
