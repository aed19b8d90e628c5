"""Trace context and chosen headers, carried from an input message to its results and log lines.

An input message's Kafka headers `traceparent` and `tracestate` (W3C Trace Context), and those
named in `HeaderPolicy.carry` (e.g. x-request-id), are copied onto its verdict or dead letter as
Kafka headers, and into the log lines about it: `trace_id`, and the carried values under
`headers`. The worker is not a tracer: it starts no span and passes a valid `traceparent` on
unchanged, as a pass-through participant does, so a verdict appears as a child of the producer's
span.

What is not carried:
- An invalid `traceparent` (W3C Trace Context Level 1, section 3.2: lowercase hex, the version
  not ff, neither id all zeros; version 00 exactly 55 characters), or more than one: it would
  name no trace, or none for sure. The spec says a vendor MUST NOT then parse `tracestate`, so
  that is dropped too; the log line says `traceparent_invalid`.
- A value over `max_value_bytes` (1 KiB): a producer cannot blow up our logs or our output
  messages; the log line names it in `headers_skipped`. `tracestate` sent in several headers is
  joined with commas (as the spec combines them), then bounded the same way.
Names match case-insensitively and are carried under their lowercase form; of a repeated
header other than these two, the first is carried.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

TRACEPARENT, TRACESTATE = "traceparent", "tracestate"
MAX_VALUE_BYTES = 1024
Header = tuple[str, bytes]
# version-traceid-parentid-flags, lowercase hex only; later versions may append "-..." fields.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@dataclass(frozen=True)
class HeaderPolicy:
    carry: tuple[str, ...] = ()  # header names carried besides traceparent and tracestate
    max_value_bytes: int = MAX_VALUE_BYTES  # longer values are skipped, not truncated


@dataclass(frozen=True)
class Carried:
    """What one input message hands on: Kafka headers for its result, fields for its logs."""

    headers: tuple[Header, ...] = ()
    log_fields: dict[str, Any] = field(default_factory=dict)


NOTHING = Carried()


def trace_id_of(traceparent: bytes) -> str | None:
    """The trace id of a valid W3C traceparent value, else None."""
    try:
        text = traceparent.decode("ascii")
    except UnicodeDecodeError:
        return None
    found = _TRACEPARENT.match(text)
    if found is None:
        return None
    version, trace_id, parent_id, _ = found.groups()
    if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    if version == "00" and len(text) != 55:
        return None
    if len(text) > 55 and text[55] != "-":  # a later version's extra fields follow a dash
        return None
    return trace_id


def carry(headers: Iterable[tuple[str, bytes | None]], policy: HeaderPolicy) -> Carried:
    """The headers of an input message that its result and log lines carry (see module doc)."""
    extras = tuple(dict.fromkeys(n.lower() for n in policy.carry if n.lower() not in
                                 (TRACEPARENT, TRACESTATE)))
    wanted = {TRACEPARENT, TRACESTATE, *extras}
    found: dict[str, list[bytes]] = {}
    skipped: list[str] = []
    for key, value in headers:
        name = key.lower()
        if name not in wanted or value is None:
            continue
        if len(value) > policy.max_value_bytes:
            skipped.append(name)
            continue
        found.setdefault(name, []).append(value)
    out: list[Header] = []
    fields: dict[str, Any] = {}
    if TRACEPARENT in found:
        values = found[TRACEPARENT]
        trace_id = trace_id_of(values[0]) if len(values) == 1 else None
        if trace_id is None:
            fields["traceparent_invalid"] = True
        else:
            out.append((TRACEPARENT, values[0]))
            fields["trace_id"] = trace_id
            state = b",".join(found.get(TRACESTATE, []))
            if len(state) > policy.max_value_bytes:
                skipped.append(TRACESTATE)
            elif state:
                out.append((TRACESTATE, state))
    carried_text = {}
    for name in extras:
        if name in found:
            out.append((name, found[name][0]))
            carried_text[name] = found[name][0].decode("utf-8", "replace")
    if carried_text:
        fields["headers"] = carried_text
    if skipped:
        fields["headers_skipped"] = sorted(set(skipped))
    return Carried(tuple(out), fields) if out or fields else NOTHING
