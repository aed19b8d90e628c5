"""Trace context and chosen headers: parsed per W3C, bounded, carried onto results and into logs."""
from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
import structlog

from detector.service import Detector
from worker.headers import NOTHING, HeaderPolicy, carry, trace_id_of
from worker.settings import SettingsError, load_settings

from test_pipeline import CFG, build, ref, run_until_idle

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()
POLICY = HeaderPolicy(carry=("x-request-id", "X-Tenant"))


@pytest.mark.parametrize("value, trace_id", [
    (TRACEPARENT, TRACE_ID),
    (f"00-{TRACE_ID}-00f067aa0ba902b7-00".encode(), TRACE_ID),  # not sampled: still a trace
    (f"cc-{TRACE_ID}-00f067aa0ba902b7-01-what-comes-later".encode(), TRACE_ID),  # a later version
    (f"cc-{TRACE_ID}-00f067aa0ba902b7-01x".encode(), None),  # later fields must follow a dash
    (f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra".encode(), None),  # version 00 is exactly 55
    (f"ff-{TRACE_ID}-00f067aa0ba902b7-01".encode(), None),  # version ff is forbidden
    (f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01".encode(), None),  # lowercase hex only
    (f"00-{'0' * 32}-00f067aa0ba902b7-01".encode(), None),  # all-zero trace id
    (f"00-{TRACE_ID}-{'0' * 16}-01".encode(), None),  # all-zero parent id
    (f"00-{TRACE_ID}-00f067aa0ba902b7".encode(), None),  # no flags
    (f"00-{TRACE_ID[:-1]}-00f067aa0ba902b7-01".encode(), None),
    (b"\xff\xfe" + TRACEPARENT, None),  # not ASCII
    (b"", None),
])
def test_traceparent_is_parsed_as_w3c_trace_context_level_1(value, trace_id):
    assert trace_id_of(value) == trace_id


def test_trace_context_and_chosen_headers_are_carried_and_nothing_else():
    got = carry([("TraceParent", TRACEPARENT), ("tracestate", b"congo=t61rcWkgMzE"),
                 ("x-request-id", b"req-1"), ("x-tenant", b"acme"), ("x-request-id", b"req-2"),
                 ("authorization", b"Bearer secret"), ("x-empty", None)], POLICY)
    assert got.headers == (("traceparent", TRACEPARENT), ("tracestate", b"congo=t61rcWkgMzE"),
                           ("x-request-id", b"req-1"), ("x-tenant", b"acme"))
    assert got.log_fields == {"trace_id": TRACE_ID,
                              "headers": {"x-request-id": "req-1", "x-tenant": "acme"}}


def test_an_invalid_traceparent_is_not_carried_and_takes_tracestate_with_it():
    for headers in ([("traceparent", b"00-not-a-trace-01"), ("tracestate", b"a=1")],
                    [("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)]):  # which one?
        got = carry(headers + [("x-request-id", b"r")], POLICY)
        assert got.headers == (("x-request-id", b"r"),)
        assert got.log_fields == {"traceparent_invalid": True, "headers": {"x-request-id": "r"}}
    # tracestate alone means nothing (W3C: it is read only with a valid traceparent)
    assert carry([("tracestate", b"a=1")], POLICY) is NOTHING


def test_values_over_the_bound_are_skipped_and_named_and_tracestates_are_joined():
    big = b"x" * 1025
    got = carry([("traceparent", TRACEPARENT), ("x-tenant", big), ("x-request-id", b"\xffok"),
                 ("tracestate", b"a=1"), ("tracestate", b"b=2")], POLICY)
    assert got.headers == (("traceparent", TRACEPARENT), ("tracestate", b"a=1,b=2"),
                           ("x-request-id", b"\xffok"))  # the bytes as they came
    assert got.log_fields["headers"] == {"x-request-id": "\ufffdok"}  # logs: text, replaced
    assert got.log_fields["headers_skipped"] == ["x-tenant"]
    joined_too_long = carry([("traceparent", TRACEPARENT), ("tracestate", b"a" * 600),
                             ("tracestate", b"b" * 600)], POLICY)
    assert joined_too_long.headers == (("traceparent", TRACEPARENT),)
    assert joined_too_long.log_fields["headers_skipped"] == ["tracestate"]
    assert carry([], POLICY) is NOTHING and carry([("other", b"1")], HeaderPolicy()) is NOTHING


def test_the_setting_names_headers_and_refuses_odd_names():
    cfg = load_settings({"FEATDISTILL_BUNDLE": "/b",
                         "FEATDISTILL_CARRY_HEADERS": '["x-request-id", "x-tenant"]'}).configs()
    assert cfg.pipeline.headers.carry == ("x-request-id", "x-tenant")
    assert load_settings({"FEATDISTILL_BUNDLE": "/b"}).configs().pipeline.headers.carry == ()
    with pytest.raises(SettingsError, match="FEATDISTILL_CARRY_HEADERS"):
        load_settings({"FEATDISTILL_BUNDLE": "/b", "FEATDISTILL_CARRY_HEADERS": '["a b"]'})


# -- through the pipeline ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def detector(tiny_bundle):
    return Detector.load(tiny_bundle)


@pytest.fixture
def logs():
    """Every log event (debug included) as a dict, whatever logging an earlier test set up."""
    before = structlog.get_config()
    with structlog.testing.capture_logs() as captured:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
        yield captured
    structlog.configure(**before)


def test_results_carry_their_own_messages_headers_and_log_lines_do_not_leak(detector, logs):
    cfg = replace(CFG, headers=POLICY)
    p, source, sink, _ = build(detector, cfg=cfg)
    traced = [("traceparent", TRACEPARENT), ("x-request-id", b"req-1")]
    source.append(ref(0), headers=traced)
    source.append(b"{not json", headers=[("traceparent", TRACEPARENT), ("x-tenant", b"acme")])
    source.append(ref(1))  # no headers: nothing carried, nothing left over from the others
    source.append(b"also not json")
    run_until_idle(p)
    by_id = {json.loads(m.value)["id"]: m for m in sink.on("verdicts")}
    (broken, plain_broken) = sink.on("dead")
    assert by_id["m0"].headers == (("traceparent", TRACEPARENT), ("x-request-id", b"req-1"))
    assert broken.headers == (("traceparent", TRACEPARENT), ("x-tenant", b"acme"))
    assert by_id["m1"].headers == () and plain_broken.headers == ()
    lines = {(e["event"], e["id"] or e["offset"]): e for e in logs
             if e["event"] in ("verdict", "dead_letter")}
    assert lines[("verdict", "m0")]["trace_id"] == TRACE_ID
    assert lines[("verdict", "m0")]["headers"] == {"x-request-id": "req-1"}
    assert lines[("dead_letter", 1)]["headers"] == {"x-tenant": "acme"}
    for quiet in (lines[("verdict", "m1")], lines[("dead_letter", 3)]):
        assert "trace_id" not in quiet and "headers" not in quiet
    assert structlog.contextvars.get_contextvars() == {}  # nothing bound behind our back
