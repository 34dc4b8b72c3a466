"""The inference service: one process that owns the engine and serves chats over a Unix socket.

Modules: server (listeners, lifecycle), app (routes, middlewares), chat_api (the two chat APIs),
scheduler (queue + engine thread), schemas (wire types), systemd_integration, metrics, openapi,
client (HTTP-over-UDS client for the TUI, CLI and tests).
"""
