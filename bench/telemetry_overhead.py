"""Telemetry overhead per session, and the size of one scrape. Prints figures; asserts nothing.

    .venv/bin/python -m bench.telemetry_overhead --sessions 10

Runs the same text-mode sessions (storyteller_devkit.session_driver, real plugins, local model server)
in child processes with telemetry (metrics collector + OTLP tracing to a local receiver) and without,
alternating, and compares the CPU time the driver processes report. Then renders what the worker's
/metrics serves from the multiprocess directory those sessions filled and reports its size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from storyteller_devkit.model_server import DEV_API_KEY, DEV_API_SECRET, ThreadedServer
from storyteller_devkit.otlp_receiver import OtlpReceiver
from storyteller_devkit.tenant_config import tenant_dict


def _cpu(env: dict[str, str], sessions: int, telemetry: bool) -> float:
    cmd = [sys.executable, "-m", "storyteller_devkit.session_driver", "--sessions", str(sessions)]
    out = subprocess.run(
        cmd + ([] if telemetry else ["--no-telemetry"]), env=env, check=True, capture_output=True, text=True
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith("cpu_seconds="))
    return float(line.split("=")[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=10, help="sessions per driver process")
    parser.add_argument("--rounds", type=int, default=3, help="alternating with/without pairs")
    args = parser.parse_args()
    server = ThreadedServer().start()
    receiver = OtlpReceiver().start()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "tenant.json").write_text(json.dumps(tenant_dict(server.base_url)))
        (work / "metrics").mkdir()
        env = {
            **os.environ,
            "STORYTELLER_CONFIG": str(work / "tenant.json"),
            "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
            "OPENAI_API_KEY": "sk-bench",
            "DEEPGRAM_API_KEY": "dg-bench",
            "LIVEKIT_URL": server.origin,
            "LIVEKIT_API_KEY": DEV_API_KEY,
            "LIVEKIT_API_SECRET": DEV_API_SECRET,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        }
        with_t, without_t = [], []
        for _ in range(args.rounds):
            without_t.append(_cpu(env, args.sessions, telemetry=False))
            with_t.append(_cpu(env, args.sessions, telemetry=True))
        scrape = subprocess.run(
            [
                sys.executable,
                "-c",
                "from prometheus_client import CollectorRegistry, generate_latest, multiprocess;"
                "r = CollectorRegistry(); multiprocess.MultiProcessCollector(r);"
                "import sys; sys.stdout.buffer.write(generate_latest(r))",
            ],
            env=env,
            check=True,
            capture_output=True,
        ).stdout
    receiver.stop()
    server.stop()
    per_with = statistics.median(with_t) / args.sessions
    per_without = statistics.median(without_t) / args.sessions
    print(f"sessions per process: {args.sessions}, rounds: {args.rounds}")
    print(f"CPU per session without telemetry: {per_without * 1000:.1f} ms (median of {without_t})")
    print(f"CPU per session with telemetry:    {per_with * 1000:.1f} ms (median of {with_t})")
    overhead_ms = (per_with - per_without) * 1000
    print(f"overhead per session: {overhead_ms:.1f} ms, ratio with/without: {per_with / per_without:.3f}")
    series = [x for x in scrape.decode().splitlines() if x and not x.startswith("#")]
    print(f"one scrape of the storyteller metrics (one tenant): {len(scrape)} bytes, {len(series)} samples")


if __name__ == "__main__":
    main()
