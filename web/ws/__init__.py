"""The WebSocket fan-out process (SPEC §7): handshake, subscriptions, price and portfolio frames."""
