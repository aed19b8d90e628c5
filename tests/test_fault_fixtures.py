"""bench/fault_injection.py's references get the outcomes it expects of them.

Every poison form (content served by the bench's image server, SSRF forms aimed at its canary
and at internal addresses, broken messages) is put through the worker's own message parser,
fetch policy and decoder, configured as the bench configures its workers (only 127.0.0.2
allowed); the canary must see no connection. The slow and dripping references are left out:
they only take time.
"""
from __future__ import annotations

import json
import socket
import time

import pytest

from bench.fault_fixtures import (MESSAGE_FORMS, VERDICT, Canary, ImageServer, build_references,
                                  content_forms, dead, make_jpeg, ssrf_forms)
from detector.images import ImageDecodeError, decode_image
from worker.adapters.fetch import FetchConfig, ImageFetcher
from worker.ports import FetchError
from worker.messages import MessageError, parse_reference


def outcome(fetcher: ImageFetcher, value: bytes | None) -> str:
    """What the worker makes of one message, short of inference."""
    try:
        ref = parse_reference(value)
    except MessageError as exc:
        return dead(exc.kind)
    try:
        decode_image(fetcher.fetch(ref.uri))
    except FetchError as exc:
        return dead(f"fetch_{exc.kind}")
    except ImageDecodeError as exc:
        return dead(f"decode_{exc.kind}")
    return VERDICT


@pytest.fixture
def servers():
    canary = Canary().start()
    server = ImageServer([make_jpeg(i) for i in range(3)], canary.port).start()
    yield server, canary
    server.stop()
    canary.stop()


def test_every_poison_form_gets_its_dead_letter_and_the_canary_is_never_reached(servers):
    server, canary = servers
    forms = len(content_forms(server.base)) + len(ssrf_forms(canary.port)) + len(MESSAGE_FORMS)
    refs = build_references(2 * forms + 20, 0.5, server.base, canary.port, pool_size=3)
    fetcher = ImageFetcher(FetchConfig(allow_hosts=("127.0.0.2/32",), total_timeout_s=10))
    checked = {}
    for ref in refs:
        if ref.category in ("slow", "drip") or ref.category in checked:
            continue
        checked[ref.category] = (outcome(fetcher, ref.value), ref.expected)
    assert len(checked) == forms + 1  # every form, and the good images
    wrong = {name: got for name, (got, expected) in checked.items() if got not in expected}
    assert wrong == {}
    assert canary.hits == []


def test_the_canary_counts_a_connection(servers):
    _, canary = servers
    socket.create_connection(("127.0.0.1", canary.port), timeout=5).close()
    deadline = time.monotonic() + 30
    while not canary.hits and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(canary.hits) == 1


def test_every_reference_is_keyed_by_its_id_and_named_in_its_message():
    refs = build_references(500, 0.05, "http://127.0.0.2:1", 2, pool_size=10)
    assert len({r.id for r in refs}) == 500
    named = [json.loads(r.value)["id"] == r.id for r in refs
             if r.value and r.category not in MESSAGE_FORMS]
    assert named and all(named)
    assert sum(r.category not in ("good", "slow", "drip") for r in refs) == 25
