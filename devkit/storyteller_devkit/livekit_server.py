"""A local ``livekit-server --dev`` on free loopback ports, for tests, benches and the demo.

:func:`running_livekit_server` starts it (never on the 7880-7882 defaults), waits until it answers
HTTP and stops it at the end of the ``with`` block; the :class:`LiveKitServer` it yields has ``url``
(``ws://127.0.0.1:<port>``), ``http_url``, ``api_key`` (``devkey``), ``api_secret`` (``secret``),
``port`` and ``log_path``. ``also_bind=(ip,)`` listens on more addresses (the real node's bridge, so
pods reach it); ``url_on(ip)`` is its URL there.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storyteller_devkit.cluster import find_tool
from storyteller_devkit.process import free_port, http_ok, stop_process, wait_until

LIVEKIT_START_DEADLINE_S = 30


@dataclass(frozen=True)
class LiveKitServer:
    """A running ``livekit-server --dev`` on loopback (see the module docstring)."""

    url: str
    http_url: str
    port: int
    api_key: str
    api_secret: str
    log_path: Path
    rtc_tcp_port: int  # ICE over TCP
    rtc_udp_port: int  # all UDP media, multiplexed on one port

    def livekit_media(self) -> dict[str, Any]:
        """A tenant's spec.worker.livekitMedia for this server: its media ports and nothing else."""
        return {
            "udpPortRangeStart": self.rtc_udp_port,
            "udpPortRangeEnd": self.rtc_udp_port,
            "udpPorts": [],
            "tcpPorts": [self.rtc_tcp_port],
        }

    def url_on(self, host: str) -> str:
        """The signalling URL on another address it binds (see ``also_bind``)."""
        return f"ws://{host}:{self.port}"

    async def wait_room_gone(self, room: str, deadline_s: float = 10.0) -> None:
        """Until the server no longer lists `room` (AssertionError past the deadline). A deletion disconnects
        everyone at once and the server forgets the room a moment later: a caller that saw its hang-up may
        still find it listed."""
        from livekit import api  # the server's tests need it; the rest of the devkit does not

        deadline = time.monotonic() + deadline_s
        async with api.LiveKitAPI(self.http_url, self.api_key, self.api_secret) as lk:
            while (await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))).rooms:
                assert time.monotonic() < deadline, f"room {room} still listed {deadline_s:g} s on"
                await asyncio.sleep(0.1)  # polling the condition, with a deadline


@contextlib.contextmanager
def running_livekit_server(
    also_bind: tuple[str, ...] = (), *, binary: Path | None = None
) -> Iterator[LiveKitServer]:
    """`livekit-server --dev` on free loopback ports.

    `also_bind`: more local addresses to listen on (the real node's bridge address, for pods).
    `binary`: another build to run (another version, for comparisons); default the cached one.

    Raises FileNotFoundError when the binary is not installed, RuntimeError when it does not start.
    """
    binary = binary or find_tool("livekit-server")
    port, tcp_port, udp_port = free_port(), free_port(), free_port()
    # --dev brings the devkey/secret key pair; the config moves every port off the 7880-7882 defaults.
    config = (
        f"port: {port}\n"
        f"rtc:\n  tcp_port: {tcp_port}\n  udp_port: {udp_port}\n  use_external_ip: false\n"
        "keys:\n  devkey: secret\n"
    )
    log_dir = Path(tempfile.mkdtemp(prefix="storyteller-livekit-"))
    log_path = log_dir / "livekit-server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(binary),
                "--dev",
                *(arg for host in ("127.0.0.1", *also_bind) for arg in ("--bind", host)),
                "--config-body",
                config,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        http_url = f"http://127.0.0.1:{port}"
        # WaitFailed is a RuntimeError: it names the exit status or the deadline, and the log's tail.
        wait_until(
            f"livekit-server to answer on {http_url}",
            lambda: http_ok(http_url),
            LIVEKIT_START_DEADLINE_S,
            proc=proc,
            context=lambda: f"{log_path}:\n{log_path.read_text()[-3000:]}",
        )
        yield LiveKitServer(
            url=f"ws://127.0.0.1:{port}",
            http_url=http_url,
            port=port,
            api_key="devkey",
            api_secret="secret",
            log_path=log_path,
            rtc_tcp_port=tcp_port,
            rtc_udp_port=udp_port,
        )
    finally:
        stop_process(proc, 15)
