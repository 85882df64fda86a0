"""WebSocket fan-out under the SPEC §8 load: two `ftl ws` replicas, 20,000 connections (10,000
each), every client subscribed to 5 of 44 instruments, all 44 ticking every 2 s for a minute.

Prints one JSON object. Latency runs from each tick's `t` (taken just before it is published) to
two moments on the same clock: `tick_to_socket_ms` when its bytes reached the client's socket (the
kernel's receive timestamp, SO_TIMESTAMPNS: what a client on another machine would see, give or
take the network) and `tick_to_client_code_ms` when the client's code had them (adds the clients'
own scheduling delay, since they share the cores with the servers). Also: ticks delivered vs
expected, connections lost, the server side (a tick's age when its fan-out cycle had written every
frame, from each replica's /metrics), RSS per connection, CPU of each replica (also per price
frame) and of the clients. The clients are as cheap as they can be (raw sockets on uvloop, one
process per core); the `ws` processes and the clients get their file limit raised to `--nofile`.

    python -m bench.ws [--connections 20000] [--seconds 60] [--client-processes 2]

Needs REDIS_URL (make services-up). Uses instruments with idx 65001-65044 and removes them after.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from array import array
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import httpx
import msgpack
import uvloop

from ftl.core.config import Settings, get_settings
from ftl.market import instruments
from ftl.market.instruments import InstrumentState
from ftl.store import hotstore, keys
from ftl.store.auth.tokens import Tokens, TokenType, generate_private_key_b64
from ftl.store.ticks import Tick, TickSource

FTL = str(Path(sys.executable).with_name("ftl"))
INSTRUMENTS = 44
SUBSCRIPTIONS_PER_CLIENT = 5
FIRST_IDX = 65_001
TICK_INTERVAL_S = 2.0
HANDSHAKES_IN_FLIGHT = 16  # per client process
CONNECT_ATTEMPTS = 5  # a refused or dropped handshake is retried, as a real client would
DRAIN_S = 3.0  # after the last tick, before counting
CATCH_UP_S = 2.0  # a client reading nothing new for this long has read everything


BENCH_IDXS = [FIRST_IDX + n for n in range(INSTRUMENTS)]
# A tick as the clients and the ticking side both name it: (idx, seq).
TickKey = tuple[int, int]


def subscribed_idxs(connection_number: int, idxs: list[int]) -> list[int]:
    """Five distinct instruments per client, spread evenly over `idxs`."""
    first = connection_number * SUBSCRIPTIONS_PER_CLIENT
    return [idxs[(first + n) % len(idxs)] for n in range(SUBSCRIPTIONS_PER_CLIENT)]


# -- client processes
#
# PERF: the clients share the two cores with the servers they measure, so each costs as little as
# possible: a raw non-blocking socket read straight from the event loop (uvloop's add_reader), the
# server's frames (unmasked, RFC 6455 §5.2) split by hand, one process per core.

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
SO_TIMESTAMPNS = 35  # Linux; the `socket` module does not name it
TIMESPEC = struct.Struct("qq")
RECV_BYTES = 65_536
ANCILLARY_BYTES = socket.CMSG_SPACE(TIMESPEC.size)


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame: masked, as RFC 6455 requires of clients; the all-zero key leaves the
    payload as it is (the server unmasks whatever key it gets)."""
    assert len(payload) < 126
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload


def split_frames(buffer: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole (opcode, payload) frames at the start of `buffer`, and what is left of it."""
    whole = []
    position, end = 0, len(buffer)
    while end - position >= 2:
        size = buffer[position + 1] & 0x7F
        header = 2
        if size == 126:
            header = 4
            size = int.from_bytes(buffer[position + 2 : position + 4], "big")
        elif size == 127:
            header = 10
            size = int.from_bytes(buffer[position + 2 : position + 10], "big")
        if end - position < header + size:
            break
        start = position + header
        whole.append((buffer[position] & 0x0F, buffer[start : start + size]))
        position = start + size
    return whole, buffer[position:]


class Ticks:
    """Every tick this process received: its idx and seq, when its bytes reached the client's
    socket (the kernel's receive timestamp) and when the client's code had them in hand."""

    def __init__(self) -> None:
        self.idxs, self.seqs = array("q"), array("q")
        self.arrived, self.handled = array("d"), array("d")
        self.frames = 0

    def record(self, payload: bytes, arrived: float, handled: float) -> None:
        self.frames += 1
        decoded = msgpack.unpackb(payload)
        for tick in decoded if isinstance(decoded, list) else [decoded]:
            self.idxs.append(tick["i"])
            self.seqs.append(tick["q"])
            self.arrived.append(arrived)
            self.handled.append(handled)


class Feed:
    """One subscribed connection, read by `on_readable` whenever its socket has data."""

    def __init__(self, sock: socket.socket, pending: bytes, ticks: Ticks) -> None:
        self.sock = sock
        self.pending = pending
        self.ticks = ticks
        self.open = True

    def on_readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(RECV_BYTES, ANCILLARY_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        handled = time.time()
        if not data:
            self.close()
            return
        arrived = handled
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = TIMESPEC.unpack(value)
                arrived = seconds + nanoseconds / 1e9
        whole, self.pending = split_frames(self.pending + data if self.pending else data)
        for opcode, payload in whole:
            if opcode == BINARY:
                self.ticks.record(payload, arrived, handled)
            elif opcode == PING:
                self.sock.send(client_frame(PONG, payload))
            elif opcode == CLOSE:
                self.close()
                return

    def close(self) -> None:
        if self.open:
            self.open = False
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()


async def open_feed(port: int, token: str, idxs: list[int], ticks: Ticks) -> Feed:
    """Handshake, subscribe to `idxs` and wait for every acknowledgement."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws/prices?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            buffer += await _receive(loop, sock)
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        if head.split(b" ", 2)[1] != b"101":
            raise ConnectionError(f"refused: {head.splitlines()[0]!r}")
        commands = (json.dumps({"action": "subscribe", "idx": idx}).encode() for idx in idxs)
        await loop.sock_sendall(sock, b"".join(client_frame(TEXT, c) for c in commands))
        acks = 0
        while True:
            whole, buffer = split_frames(buffer)
            for opcode, payload in whole:
                if opcode == PING:
                    await loop.sock_sendall(sock, client_frame(PONG, payload))
                    continue
                if opcode != TEXT or json.loads(payload).get("type") != "subscribed":
                    raise ConnectionError(f"not subscribed: {opcode} {payload!r}")
                acks += 1
            if acks == len(idxs):
                break
            buffer += await _receive(loop, sock)
    except BaseException:
        sock.close()
        raise
    feed = Feed(sock, buffer, ticks)
    loop.add_reader(sock.fileno(), feed.on_readable)
    return feed


async def _receive(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    data = await loop.sock_recv(sock, RECV_BYTES)
    if not data:
        raise ConnectionError("closed by the server")
    return data


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def latencies_ms(ticks: Ticks, at: array[float], sent_at: dict[TickKey, float]) -> list[float]:
    """From each tick's time to `at`, for the ticks received that `sent_at` knows."""
    return sorted(
        (when - sent_at[key]) * 1000
        for key, when in zip(zip(ticks.idxs, ticks.seqs, strict=True), at, strict=True)
        if key in sent_at
    )


async def _clients(
    numbers: range, ports: list[int], idxs: list[int], settings: Settings, control: Connection
) -> None:
    tokens = Tokens(
        settings.jwt_private_key_b64, issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)
    ticks = Ticks()
    retries = 0

    async def one(number: int) -> Feed:
        nonlocal retries
        port = ports[number % len(ports)]
        for attempt in range(CONNECT_ATTEMPTS):
            token, _ = tokens.issue(TokenType.WS, str(uuid.uuid4()))
            async with gate:
                try:
                    return await open_feed(port, token, subscribed_idxs(number, idxs), ticks)
                except (ConnectionError, OSError):
                    if attempt == CONNECT_ATTEMPTS - 1:
                        raise
                    retries += 1
            await asyncio.sleep(0.5)
        raise AssertionError("unreachable")

    feeds = await asyncio.gather(*(one(number) for number in numbers))
    control.send("ready")
    cpu_before = _own_cpu_s()
    sent_at: dict[TickKey, float] = await loop.run_in_executor(None, control.recv)
    # NOTE: a client at low priority may still be reading its backlog; it has until it stalls.
    sent = Counter(idx for idx, _ in sent_at)
    expected = sum(sent[idx] for number in numbers for idx in subscribed_idxs(number, idxs))
    while len(ticks.seqs) < expected:
        before = len(ticks.seqs)
        await asyncio.sleep(CATCH_UP_S)
        if len(ticks.seqs) == before:
            break
    cpu_s = _own_cpu_s() - cpu_before
    lost = sum(not feed.open for feed in feeds)
    for feed in feeds:
        feed.close()
    control.send(
        {
            "frames": ticks.frames,
            "expected": expected,
            "arrived_ms": latencies_ms(ticks, ticks.arrived, sent_at),
            "handled_ms": latencies_ms(ticks, ticks.handled, sent_at),
            "retries": retries,
            "lost": lost,
            "cpu_s": cpu_s,
        }
    )


def client_process(
    numbers: range, ports: list[int], idxs: list[int], nofile: int, nice: int, control: Connection
) -> None:
    raise_file_limit(nofile)
    # NOTE: the clients yield the cores to the servers they measure; the kernel's receive
    # timestamp does not depend on when a client gets to read its socket.
    os.nice(nice)
    try:
        uvloop.run(_clients(numbers, ports, idxs, get_settings(), control))
    except Exception as exc:  # noqa: BLE001 - reported to the main process, which stops
        control.send(f"failed: {exc!r}")


@dataclass(frozen=True)
class Audience:
    """Who the client processes connect: `connections` in all over `processes` processes, to the
    ws `ports` in turn, each subscribed to 5 of `idxs`."""

    connections: int
    ports: list[int]
    idxs: list[int]
    processes: int


def connect_clients(
    workers: list[BaseProcess],
    controls: list[Connection],
    audience: Audience,
    nofile: int,
    nice: int,
) -> None:
    """Start the client processes (added to `workers` as they start, so the caller stops them
    whatever happens) and wait until every connection is subscribed. Each process's control end
    then takes the ticks sent ({(idx, seq): epoch s}) and answers with its figures."""
    spawn = multiprocessing.get_context("spawn")
    share = -(-audience.connections // audience.processes)
    for start in range(0, audience.connections, share):
        ours, theirs = spawn.Pipe()
        numbers = range(start, min(start + share, audience.connections))
        worker = spawn.Process(
            target=client_process,
            args=(numbers, audience.ports, audience.idxs, nofile, nice, theirs),
        )
        worker.start()
        workers.append(worker)
        controls.append(ours)
    for control in controls:
        if (answer := control.recv()) != "ready":
            raise SystemExit(f"a client process {answer}")


def stop_clients(workers: list[BaseProcess]) -> None:
    for worker in workers:
        worker.join(timeout=30)
        if worker.is_alive():
            worker.kill()


# -- the servers


def raise_file_limit(nofile: int) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))


def start_ws(port: int, nofile: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [FTL, "ws"], env={**env, "WS_PORT": str(port)}, preexec_fn=lambda: raise_file_limit(nofile)
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


def price_frames(samples: dict[str, float]) -> float:
    return samples['ftl_ws_frames_sent_total{kind="price"}']


def percentile(ordered: list[float], fraction: float) -> float:
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * fraction))], 1)


def summary(ordered: list[float]) -> dict[str, float] | None:
    if not ordered:
        return None
    fractions = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
    return {
        **{name: percentile(ordered, fraction) for name, fraction in fractions.items()},
        "max": round(ordered[-1], 1),
    }


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


async def tick_all(settings: Settings, ids: list[uuid.UUID], rounds: int) -> dict[TickKey, float]:
    """Every instrument ticks once per round (seq = round); returns each tick's time `t`
    (epoch seconds, the clock the clients' receive times are on), taken before publishing."""
    redis = hotstore.connect(settings)
    sent_at: dict[TickKey, float] = {}
    start = time.monotonic()
    for seq in range(1, rounds + 1):
        await asyncio.sleep(max(0.0, start + seq * TICK_INTERVAL_S - time.monotonic()))
        at = time.time()
        async with redis.pipeline(transaction=False) as pipe:
            for n, instrument_id in enumerate(ids):
                sent_at[FIRST_IDX + n, seq] = at
                tick = Tick(
                    instrument_id,
                    FIRST_IDX + n,
                    seq,
                    23_000 + seq,
                    23_000,
                    0,
                    TickSource.SYNTHETIC,
                    int(at * 1000),
                )
                pipe.zadd(keys.tick_log(instrument_id), {tick.to_json(): seq})
                pipe.publish(keys.price_channel(instrument_id), tick.to_json())
            await pipe.execute()
    await redis.aclose()
    return sent_at


def main() -> None:
    parser = argparse.ArgumentParser(description="WebSocket fan-out benchmark (SPEC §8).")
    parser.add_argument("--connections", type=int, default=20_000, help="in total")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=60, help="ticking time")
    parser.add_argument("--client-processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--client-nice", type=int, default=19, help="nice increment of the client processes"
    )
    parser.add_argument(
        "--nofile", type=int, default=16_384, help="file limit of each ws and client process"
    )
    args = parser.parse_args()
    os.environ.setdefault("JWT_PRIVATE_KEY_B64", generate_private_key_b64())
    os.environ.update(LOG_LEVEL="WARNING", WS_MAX_CONNECTIONS=str(args.connections))
    settings = get_settings()
    ids = asyncio.run(add_instruments(settings))
    ports = [free_port() for _ in range(args.replicas)]
    servers = [start_ws(port, args.nofile, dict(os.environ)) for port in ports]
    controls: list[Connection] = []
    workers: list[BaseProcess] = []
    try:
        idle_rss = [rss_bytes(server.pid) for server in servers]
        connect_started = time.monotonic()
        connect_clients(
            workers,
            controls,
            Audience(args.connections, ports, BENCH_IDXS, args.client_processes),
            args.nofile,
            args.client_nice,
        )
        connect_s = time.monotonic() - connect_started
        connected_rss = [rss_bytes(server.pid) for server in servers]
        cpu_before = [cpu_seconds(server.pid) for server in servers]
        rounds = int(args.seconds / TICK_INTERVAL_S)
        tick_started = time.monotonic()
        sent_at = asyncio.run(tick_all(settings, ids, rounds))
        time.sleep(DRAIN_S)
        wall_s = time.monotonic() - tick_started
        cpu_s = [
            cpu_seconds(server.pid) - before
            for server, before in zip(servers, cpu_before, strict=True)
        ]
        scraped = [scrape(port) for port in ports]
        for control in controls:
            control.send(sent_at)
        results = [control.recv() for control in controls]
    finally:
        stop_clients(workers)
        for server in servers:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        asyncio.run(remove_instruments(settings, ids))
    arrived = sorted(ms for result in results for ms in result["arrived_ms"])
    handled = sorted(ms for result in results for ms in result["handled_ms"])
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
                "ticks_delivered": len(arrived),
                "frames_delivered": sum(result["frames"] for result in results),
                "connections_lost": sum(result["lost"] for result in results),
                "handshake_retries": sum(result["retries"] for result in results),
                "tick_to_socket_ms": summary(arrived),
                "tick_to_client_code_ms": summary(handled),
                "rss_per_connection_kib": [
                    round((after - before) / per_replica / 1024, 1)
                    for before, after in zip(idle_rss, connected_rss, strict=True)
                ],
                "rss_mib": [round(after / 2**20, 1) for after in connected_rss],
                "cpu_percent_of_one_core": [round(one / wall_s * 100, 1) for one in cpu_s],
                "cpu_us_per_price_frame": [
                    round(one / max(price_frames(samples), 1) * 1e6, 1)
                    for one, samples in zip(cpu_s, scraped, strict=True)
                ],
                "fan_out_cycle_mean_ms": [fan_out_mean_ms(one) for one in scraped],
                "server_tick_age_p50_under_ms": [tick_age_bound_ms(one, 0.5) for one in scraped],
                "server_tick_age_p99_under_ms": [tick_age_bound_ms(one, 0.99) for one in scraped],
                "clients_cpu_percent_of_one_core": round(
                    sum(result["cpu_s"] for result in results) / wall_s * 100, 1
                ),
                "client_nice": args.client_nice,
                "ws_nofile": args.nofile,
            }
        )
    )


if __name__ == "__main__":
    main()
