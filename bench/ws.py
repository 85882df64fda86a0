"""WebSocket fan-out under the SPEC §8 load: two `ftl ws` replicas, 20,000 connections (10,000
each), every client subscribed to 5 of 44 instruments, all 44 ticking every 2 s for a minute.

Prints one JSON object: tick-to-client latency p50/p95/p99 (publish to the client's receive, in
ms, so it includes the client processes' own delay on the same machine), the server side of it
(a tick's age when its fan-out cycle had written every frame, from each replica's /metrics),
ticks delivered vs expected, RSS per connection and CPU of each replica and of the clients.
Clients run in several processes so none of them passes the file limit; each `ws` process gets
its file limit raised to `--nofile` (10,000 connections need a bit over 10,000 descriptors).

    python -m bench.ws [--connections 20000] [--seconds 60] [--client-processes 4]

Needs REDIS_URL (make services-up). Uses instruments with idx 65001-65044 and removes them after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from array import array
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import msgpack
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from ftl import hotstore, instruments, keys
from ftl.auth.tokens import Tokens, TokenType, generate_private_key_b64
from ftl.config import Settings, get_settings
from ftl.instruments import InstrumentState
from ftl.ticks import Tick, TickSource

FTL = str(Path(sys.executable).with_name("ftl"))
INSTRUMENTS = 44
SUBSCRIPTIONS_PER_CLIENT = 5
FIRST_IDX = 65_001
TICK_INTERVAL_S = 2.0
HANDSHAKES_IN_FLIGHT = 16  # per client process
CONNECT_ATTEMPTS = 5  # a refused or dropped handshake is retried, as a real client would
DRAIN_S = 3.0  # after the last tick, before counting


def subscribed_idxs(connection_number: int) -> list[int]:
    """Five distinct instruments per client, spread evenly over the 44."""
    first = connection_number * SUBSCRIPTIONS_PER_CLIENT
    return [FIRST_IDX + (first + n) % INSTRUMENTS for n in range(SUBSCRIPTIONS_PER_CLIENT)]


# -- client processes


class BenchClient(asyncio.Protocol):
    """A lean client on websockets' Sans-I/O protocol (no task or future per frame), so the
    clients' own overhead disturbs the servers' figures as little as possible."""

    def __init__(self, target: str, idxs: list[int], record: Callable[[Any, float], None]) -> None:
        self.protocol = ClientProtocol(parse_uri(target))
        self.idxs = idxs
        self.record = record
        self.acks = 0
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                if event.status_code != 101:
                    refused = ConnectionError(f"refused: {event.status_code} {event.body!r}")
                    self.subscribed.set_exception(refused)
                    return
                for idx in self.idxs:
                    self.protocol.send_text(
                        json.dumps({"action": "subscribe", "idx": idx}).encode()
                    )
            elif not isinstance(event, Frame):
                continue
            elif event.opcode is Opcode.BINARY:
                self.record(msgpack.unpackb(event.data), now)
            elif event.opcode is Opcode.TEXT:
                self.acks += 1
                if self.acks == len(self.idxs):
                    self.subscribed.set_result(None)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError(f"lost while subscribing: {exc}"))

    def _flush(self) -> None:
        assert self.transport is not None
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _clients(
    numbers: range, ports: list[int], settings: Settings, control: Connection
) -> None:
    tokens = Tokens(
        settings.jwt_private_key_b64, issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)
    seqs, received_at = array("q"), array("d")
    frames = 0

    def record(decoded: Any, now: float) -> None:
        nonlocal frames
        frames += 1
        for tick in decoded if isinstance(decoded, list) else [decoded]:
            seqs.append(tick["q"])
            received_at.append(now)

    retries = 0

    async def one(number: int) -> BenchClient:
        nonlocal retries
        port = ports[number % len(ports)]
        for attempt in range(CONNECT_ATTEMPTS):
            token, _ = tokens.issue(TokenType.WS, str(uuid.uuid4()))
            target = f"ws://127.0.0.1:{port}/ws/prices?token={token}"
            async with gate:
                try:
                    _, client = await loop.create_connection(
                        partial(BenchClient, target, subscribed_idxs(number), record),
                        "127.0.0.1",
                        port,
                    )
                    await client.subscribed
                    return client
                except (ConnectionError, OSError):
                    if attempt == CONNECT_ATTEMPTS - 1:
                        raise
                    retries += 1
            await asyncio.sleep(0.5)
        raise AssertionError("unreachable")

    clients = await asyncio.gather(*(one(number) for number in numbers))
    control.send("ready")
    cpu_before = _own_cpu_s()
    sent_at: dict[int, float] = await loop.run_in_executor(None, control.recv)
    cpu_s = _own_cpu_s() - cpu_before
    latencies_ms = sorted(
        (at - sent_at[seq]) * 1000 for seq, at in zip(seqs, received_at, strict=True)
    )
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    control.send(
        {"frames": frames, "latencies_ms": latencies_ms, "retries": retries, "cpu_s": cpu_s}
    )


def client_process(numbers: range, ports: list[int], control: Connection) -> None:
    try:
        asyncio.run(_clients(numbers, ports, get_settings(), control))
    except Exception as exc:  # noqa: BLE001 - reported to the main process, which stops
        control.send(f"failed: {exc!r}")


# -- the servers


def start_ws(port: int, nofile: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    def raise_file_limit() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))

    process = subprocess.Popen(
        [FTL, "ws"], env={**env, "WS_PORT": str(port)}, preexec_fn=raise_file_limit
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"ftl ws on port {port} did not start")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def scrape(port: int) -> dict[str, float]:
    """Every sample of a replica's /metrics, keyed by name with its labels."""
    samples = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def fan_out_mean_ms(samples: dict[str, float]) -> float:
    cycles = max(samples["ftl_ws_fan_out_cycle_seconds_count"], 1.0)
    return round(samples["ftl_ws_fan_out_cycle_seconds_sum"] / cycles * 1000, 1)


def tick_age_bound_ms(samples: dict[str, float], fraction: float) -> float | None:
    """The histogram bucket bound under which `fraction` of ticks had been written out."""
    total = samples["ftl_ws_tick_age_seconds_count"]
    bounds = sorted(
        (float(name.split('le="')[1].rstrip('"}')), count)
        for name, count in samples.items()
        if name.startswith("ftl_ws_tick_age_seconds_bucket") and "+Inf" not in name
    )
    for bound, count in bounds:
        if count >= fraction * total:
            return bound * 1000
    return None


def percentile(ordered: list[float], fraction: float) -> float:
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * fraction))], 1)


async def add_instruments(settings: Settings) -> list[uuid.UUID]:
    redis = hotstore.connect(settings)
    states = [
        InstrumentState(
            id=uuid.uuid4(),
            idx=FIRST_IDX + n,
            sportmonks_player_id=0,
            name=f"bench {n}",
            team="bench",
            position="MID",
            form_index=Decimal(10),
            base_price_cents=23_000,
            live_base_price_cents=23_000,
            k_mod_micros=50_000,
            net_lots_centis=0,
            seq=0,
            is_active=True,
            frozen=False,
            degraded=False,
        )
        for n in range(INSTRUMENTS)
    ]
    await instruments.load_missing(redis, states)
    await redis.aclose()
    return [state.id for state in states]


async def remove_instruments(settings: Settings, ids: list[uuid.UUID]) -> None:
    redis = hotstore.connect(settings)
    async with redis.pipeline(transaction=True) as pipe:
        for n, instrument_id in enumerate(ids):
            pipe.delete(keys.instrument(instrument_id), keys.tick_log(instrument_id))
            pipe.hdel(keys.INSTRUMENT_IDX, str(FIRST_IDX + n))
            pipe.srem(keys.INSTRUMENT_IDS, str(instrument_id))
        await pipe.execute()
    await redis.aclose()


async def tick_all(settings: Settings, ids: list[uuid.UUID], rounds: int) -> dict[int, float]:
    """Every instrument ticks once per round (seq = round); returns each round's publish time."""
    redis = hotstore.connect(settings)
    sent_at: dict[int, float] = {}
    start = time.monotonic()
    for seq in range(1, rounds + 1):
        await asyncio.sleep(max(0.0, start + seq * TICK_INTERVAL_S - time.monotonic()))
        async with redis.pipeline(transaction=False) as pipe:
            for n, instrument_id in enumerate(ids):
                tick = Tick(
                    instrument_id,
                    FIRST_IDX + n,
                    seq,
                    23_000 + seq,
                    23_000,
                    0,
                    TickSource.SYNTHETIC,
                    int(time.time() * 1000),
                )
                pipe.zadd(keys.tick_log(instrument_id), {tick.to_json(): seq})
                pipe.publish(keys.price_channel(instrument_id), tick.to_json())
            sent_at[seq] = time.time()
            await pipe.execute()
    await redis.aclose()
    return sent_at


def main() -> None:
    parser = argparse.ArgumentParser(description="WebSocket fan-out benchmark (SPEC §8).")
    parser.add_argument("--connections", type=int, default=20_000, help="in total")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=60, help="ticking time")
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--nofile", type=int, default=16_384, help="file limit of each ws")
    args = parser.parse_args()
    os.environ.setdefault("JWT_PRIVATE_KEY_B64", generate_private_key_b64())
    os.environ.update(LOG_LEVEL="WARNING", WS_MAX_CONNECTIONS=str(args.connections))
    settings = get_settings()
    ids = asyncio.run(add_instruments(settings))
    ports = [free_port() for _ in range(args.replicas)]
    servers = [start_ws(port, args.nofile, dict(os.environ)) for port in ports]
    spawn = multiprocessing.get_context("spawn")
    controls: list[Connection] = []
    workers = []
    try:
        idle_rss = [rss_bytes(server.pid) for server in servers]
        share = -(-args.connections // args.client_processes)
        connect_started = time.monotonic()
        for start in range(0, args.connections, share):
            ours, theirs = spawn.Pipe()
            numbers = range(start, min(start + share, args.connections))
            worker = spawn.Process(target=client_process, args=(numbers, ports, theirs))
            worker.start()
            workers.append(worker)
            controls.append(ours)
        for control in controls:
            if (answer := control.recv()) != "ready":
                raise SystemExit(f"a client process {answer}")
        connect_s = time.monotonic() - connect_started
        connected_rss = [rss_bytes(server.pid) for server in servers]
        cpu_before = [cpu_seconds(server.pid) for server in servers]
        rounds = int(args.seconds / TICK_INTERVAL_S)
        tick_started = time.monotonic()
        sent_at = asyncio.run(tick_all(settings, ids, rounds))
        time.sleep(DRAIN_S)
        wall_s = time.monotonic() - tick_started
        cpu_pct = [
            round((cpu_seconds(server.pid) - before) / wall_s * 100, 1)
            for server, before in zip(servers, cpu_before, strict=True)
        ]
        scraped = [scrape(port) for port in ports]
        for control in controls:
            control.send(sent_at)
        results = [control.recv() for control in controls]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
        for server in servers:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        asyncio.run(remove_instruments(settings, ids))
    latencies = sorted(ms for result in results for ms in result["latencies_ms"])
    expected = args.connections * SUBSCRIPTIONS_PER_CLIENT * rounds
    per_replica = args.connections / args.replicas
    print(
        json.dumps(
            {
                "bench": "ws",
                "replicas": args.replicas,
                "connections": args.connections,
                "instruments": INSTRUMENTS,
                "subscriptions_per_client": SUBSCRIPTIONS_PER_CLIENT,
                "tick_rounds": rounds,
                "connect_s": round(connect_s, 1),
                "ticks_expected": expected,
                "ticks_delivered": len(latencies),
                "frames_delivered": sum(result["frames"] for result in results),
                "handshake_retries": sum(result["retries"] for result in results),
                "latency_p50_ms": percentile(latencies, 0.50),
                "latency_p95_ms": percentile(latencies, 0.95),
                "latency_p99_ms": percentile(latencies, 0.99),
                "latency_max_ms": round(latencies[-1], 1) if latencies else None,
                "rss_per_connection_kib": [
                    round((after - before) / per_replica / 1024, 1)
                    for before, after in zip(idle_rss, connected_rss, strict=True)
                ],
                "rss_mib": [round(after / 2**20, 1) for after in connected_rss],
                "cpu_percent_of_one_core": cpu_pct,
                "fan_out_cycle_mean_ms": [fan_out_mean_ms(one) for one in scraped],
                "server_tick_age_p50_under_ms": [tick_age_bound_ms(one, 0.5) for one in scraped],
                "server_tick_age_p99_under_ms": [tick_age_bound_ms(one, 0.99) for one in scraped],
                "clients_cpu_percent_of_one_core": round(
                    sum(result["cpu_s"] for result in results) / wall_s * 100, 1
                ),
                "ws_nofile": args.nofile,
            }
        )
    )


if __name__ == "__main__":
    main()
