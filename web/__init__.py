"""The edges: HTTP (Falcon ASGI) and, later, the WebSocket fan-out process."""
