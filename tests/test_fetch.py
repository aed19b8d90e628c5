"""Fetching over http: the SSRF guard, redirects, size limits, timeouts, retries.

Safety rule: traffic goes to 127.0.0.1 only; the autouse `connections` fixture (tests/fetch_support.py)
fails any test whose code tries to connect anywhere but loopback, and the blocked-address tests
assert no connection at all.
"""
from __future__ import annotations

import ipaddress
import socket
import time

import pytest

from detector.images import decode_image
from fetch_support import LOCAL, PNG, make, refused, table, url
from fetch_support import connections, http_server, server  # noqa: F401  (fixtures)
from worker.adapters.fetch import is_blocked_address, system_resolve


# --- http: success, pinning, allowlist ------------------------------------------------------

def test_fetches_png_from_allowed_host(server):
    fetcher, _ = make(**LOCAL)
    data = fetcher.fetch(url(server, "/ok.png"))
    assert data == PNG and decode_image(data).size == (8, 8)


def test_non_ascii_paths_are_percent_encoded(server):
    fetcher, _ = make(**LOCAL)
    assert fetcher.fetch(url(server, "/café noir.png")) == PNG
    assert fetcher.fetch(url(server, "/caf%C3%A9%20noir.png")) == PNG  # escapes kept as sent


def test_chunked_body_under_the_limit_is_read_whole(server):
    assert make(**LOCAL)[0].fetch(url(server, "/chunked-ok")) == PNG


def test_connects_to_the_checked_address_with_the_name_in_host_header(server, connections):
    calls: list[str] = []
    fetcher, _ = make(table({"localhost": ["127.0.0.1"]}, calls), allow_hosts=("localhost",))
    assert fetcher.fetch(url(server, "/redirect", host="localhost")) == PNG
    port = server.server_address[1]
    assert server.hosts == [f"localhost:{port}"] * 2
    assert calls == ["localhost", "localhost"]  # one lookup per hop: the redirect is re-checked
    assert connections == ["127.0.0.1", "127.0.0.1"]


def test_allow_hosts_takes_cidrs(server):
    assert make(allow_hosts=("127.0.0.0/8",))[0].fetch(url(server, "/ok.png")) == PNG


def test_loopback_is_refused_without_the_allowlist(server, connections):
    refused(make()[0], url(server, "/ok.png"), "blocked_address")
    refused(make(system_resolve)[0], url(server, "/ok.png", host="localhost"), "blocked_address")
    # A name on the allowlist does not open the door for a different name or a bare IP.
    refused(make(allow_hosts=("localhost",))[0], url(server, "/ok.png"), "blocked_address")
    assert connections == [] and server.hits == {}


# --- the SSRF guard -------------------------------------------------------------------------

INTERNAL = ["10.0.0.5", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
            "127.0.0.2", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::", "fc00::1",
            "fd12:3456::1", "fe80::1", "ff02::1", "::ffff:10.0.0.5", "::ffff:127.0.0.1",
            "::ffff:169.254.169.254", "64:ff9b::a00:5", "2002:a00:5::1"]


@pytest.mark.parametrize("address", INTERNAL)
def test_names_resolving_to_internal_addresses_are_refused_before_connecting(address, connections):
    fetcher, _ = make(table({"img.example": [address]}))
    error = refused(fetcher, "http://img.example/a.png", "blocked_address")
    assert not error.transient and error.attempts == 1 and connections == []


def test_one_internal_address_among_public_ones_is_enough_to_refuse(connections):
    fetcher, _ = make(table({"img.example": ["93.184.216.34", "169.254.169.254"]}))
    refused(fetcher, "https://img.example/a.png", "blocked_address")
    assert connections == []


@pytest.mark.parametrize("uri", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.5/x",
                                 "http://[::1]:8080/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/",
                                 "https://[fe80::1]/"])
def test_ip_literals_are_checked_without_dns(uri, connections):
    refused(make()[0], uri, "blocked_address")
    assert connections == []


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_pass_the_guard(address):
    assert not is_blocked_address(ipaddress.ip_address(address))


# --- redirects ------------------------------------------------------------------------------

def test_redirect_loop_is_bounded(server):
    error = refused(make(max_redirects=3, **LOCAL)[0], url(server, "/redirect-loop"),
                    "too_many_redirects")
    assert server.hits["/redirect-loop"] == 4 and not error.transient


@pytest.mark.parametrize("route", ["/redirect-to-private", "/redirect-to-name"])
def test_redirect_to_internal_address_is_refused_without_connecting(server, connections, route):
    fetcher, _ = make(table({"internal.test": ["10.0.0.5"]}), **LOCAL)
    refused(fetcher, url(server, route), "blocked_address")
    assert connections == ["127.0.0.1"]  # the first hop only


def test_redirect_to_file_is_refused_even_with_file_roots(server):
    fetcher, _ = make(file_roots=("/etc",), **LOCAL)
    refused(fetcher, url(server, "/redirect-to-file"), "bad_redirect")


# --- size limits and timeouts ---------------------------------------------------------------

def test_declared_length_over_the_limit_is_refused_before_reading(server):
    error = refused(make(**LOCAL)[0], url(server, "/big"), "too_large")
    assert error.attempts == 1 and server.hits["/big"] == 1


def test_streamed_body_over_the_limit_is_cut_off(server):
    refused(make(**LOCAL)[0], url(server, "/chunked-big"), "too_large")


def test_stalled_server_times_out_and_is_retried(server):
    fetcher, sleeps = make(read_timeout_s=0.3, retries=1, **LOCAL)
    start = time.monotonic()
    error = refused(fetcher, url(server, "/slow"), "timeout")
    assert error.transient and error.attempts == 2 and len(sleeps) == 1
    assert time.monotonic() - start < 1.5


def test_total_deadline_stops_a_dripping_server(server):
    fetcher, _ = make(read_timeout_s=1.0, total_timeout_s=0.5, **LOCAL)
    start = time.monotonic()
    refused(fetcher, url(server, "/drip"), "timeout")
    assert time.monotonic() - start < 1.0


def test_refused_connection_is_a_transient_connection_error():
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fetcher, sleeps = make(**LOCAL)
    error = refused(fetcher, f"http://127.0.0.1:{port}/x", "connection_error")
    assert error.transient and error.attempts == 3 and len(sleeps) == 2


# --- retries --------------------------------------------------------------------------------

def test_5xx_is_retried_until_success(server):
    fetcher, sleeps = make(**LOCAL)
    assert fetcher.fetch(url(server, "/500-then-ok")) == PNG
    assert server.hits["/500-then-ok"] == 2 and len(sleeps) == 1


@pytest.mark.parametrize("route,hits,transient", [("/500", 3, True), ("/429", 3, True),
                                                  ("/404", 1, False)])
def test_http_errors_retry_only_when_transient(server, route, hits, transient):
    fetcher, sleeps = make(**LOCAL)
    error = refused(fetcher, url(server, route), "http_error")
    assert error.status == int(route[1:]) and error.transient is transient
    assert error.attempts == hits == server.hits[route] and len(sleeps) == hits - 1


def test_backoff_is_exponential_capped_jittered_and_seedable(server):
    runs = []
    for _ in range(2):
        fetcher, sleeps = make(retries=4, backoff_s=0.5, backoff_cap_s=2.0, **LOCAL)
        refused(fetcher, url(server, "/500"), "http_error")
        runs.append(sleeps)
    assert runs[0] == runs[1]  # same seed, same delays
    for delay, base in zip(runs[0], [0.5, 1.0, 2.0, 2.0], strict=True):
        assert base / 2 <= delay <= base


def test_no_retry_whose_backoff_would_pass_the_deadline(server):
    fetcher, sleeps = make(backoff_s=10, backoff_cap_s=10, total_timeout_s=1, **LOCAL)
    assert refused(fetcher, url(server, "/500"), "http_error").attempts == 1 and sleeps == []
