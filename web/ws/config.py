"""The knobs of one `ws` process. Built from Settings in production; tests build their own (short
heartbeats, small buffers) instead of going through the environment."""

from __future__ import annotations

from dataclasses import dataclass

from ftl.core.config import Settings

FULL_COLLECTION_PERIOD_S = 60.0


@dataclass(frozen=True)
class WsConfig:
    host: str = "127.0.0.1"
    port: int = 8081  # 0 picks a free port (tests)
    cors_origins: tuple[str, ...] = ()
    max_connections: int = 20_000
    ping_interval_s: float = 20.0  # protocol ping period (SPEC §7)
    ping_timeout_s: float = 20.0  # no pong within this closes the connection
    close_timeout_s: float = 5.0  # closing handshake wait before the TCP connection is aborted
    send_timeout_s: float = 0.1  # a frame not taken within this evicts the client (SPEC §7)
    coalesce_window_s: float = 0.025  # ticks gathered per fan-out cycle (SPEC: cycle ≤ 250 ms)
    # NOTE: the SPEC §7 defaults come from Settings, so a test config and a deploy agree.
    max_connections_per_user: int = Settings.ws_max_connections_per_user  # across replicas
    # An open connection's Redis entry (web/ws/limits.py), renewed while open.
    connection_lease_s: float = float(Settings.ws_connection_lease_s)
    max_bad_messages: int = 20  # more than this closes the connection
    commands_per_s: float = float(Settings.ws_commands_per_s)  # the per-connection bucket
    command_burst: float = float(Settings.ws_command_burst)
    # NOTE: refused commands drain this bucket (one a refusal, earned back at the given rate);
    # empty means the client is persistently over the limit: 1008 (docs/decisions/0121).
    refusal_burst: float = 50.0
    refusals_forgiven_per_s: float = 1.0
    replay_ticks_per_command: int = 100  # a lastSequence replay costs a command per this many
    max_subscriptions: int = 2_048  # instrument subscriptions per connection
    # NOTE: commands over 4 KiB (frames.MAX_COMMAND_BYTES) get an error frame; this bounds what
    # the server reads at all: a bigger message closes with 1009 (docs/decisions/0120).
    max_frame_bytes: int = 16 * 1024
    write_limit_bytes: int = 32 * 1024  # user-space write buffer high-water mark per connection
    # PERF: a fixed kernel send buffer per connection (the kernel doubles it) bounds kernel memory
    # at 10,000 connections and lets a stuck reader fill it, and so be evicted, quickly.
    send_buffer_bytes: int | None = 64 * 1024
    replay_frame_ticks: int = 256  # replayed ticks per frame
    # NOTE: a replica restart brings thousands of reconnects at once; asyncio's default of 100
    # pending TCP connections would refuse most of them (the kernel caps it at somaxconn).
    listen_backlog: int = 4_096
    # PERF: None leaves Python's garbage collector as it is (tests). A `ws` process instead runs
    # its full collections itself, right after a fan-out cycle and at most this often: at 10,000
    # connections one takes ~0.5 s, and started by the allocator mid-burst it held up a whole
    # cycle's ticks (docs/decisions/0022).
    full_collection_period_s: float | None = None
    metrics_token: str = ""  # empty: /metrics answers anyone (development); else Bearer only

    @classmethod
    def from_settings(cls, settings: Settings) -> WsConfig:
        return cls(
            host=settings.web_host,
            port=settings.ws_port,
            cors_origins=settings.cors_origins,
            max_connections=settings.ws_max_connections,
            max_connections_per_user=settings.ws_max_connections_per_user,
            connection_lease_s=float(settings.ws_connection_lease_s),
            commands_per_s=float(settings.ws_commands_per_s),
            command_burst=float(settings.ws_command_burst),
            full_collection_period_s=FULL_COLLECTION_PERIOD_S,
            metrics_token=settings.metrics_token,
        )
