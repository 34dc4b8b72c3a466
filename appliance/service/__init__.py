"""The inference service: one process that owns the engine and serves chats over a Unix socket.

Modules: server (listeners, lifecycle; ``run_service``), app (middlewares and ``ROUTES``, the one route
table), chat_api and vendor_api (the chat APIs), openapi (the Route type and /openapi.json built from
the table), state (phase and the loaded model), scheduler (queue + engine thread), schemas (wire types),
http_errors, systemd_integration, metrics. Its clients live in appliance.client.
Nothing is re-exported here: aiohttp and the systemd glue load only when a module needs them.
"""
