"""The test harness's ports: never one the kernel hands out by itself, never one another test process
draws, never the same twice in a row (devkit/storyteller_devkit/process.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from storyteller_devkit import process


def ephemeral_start() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_ports_are_distinct_free_and_outside_the_kernels_own_range() -> None:
    ports = [process.free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(24800 < p < ephemeral_start() for p in ports), ports
    with socket.socket() as s:
        s.bind(("0.0.0.0", ports[-1]))  # free indeed


def test_a_port_in_use_is_skipped() -> None:
    first = process.free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", first + 1 if first + 1 in process._port_slice() else first))
        held.listen()
        taken = held.getsockname()[1]
        drawn = {process.free_port() for _ in range(process._SLICE - 1)}
    assert taken not in drawn


def test_each_xdist_worker_draws_from_its_own_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    slices = []
    for worker in ("", "gw0", "gw1", "gw9"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        slices.append(set(process._port_slice()))
    for i, a in enumerate(slices):
        assert all(not (a & b) for b in slices[i + 1 :])
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    assert process.free_port() in process._port_slice()
