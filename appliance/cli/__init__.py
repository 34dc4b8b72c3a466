"""`llm-tpu`, the one command line (entry point :func:`appliance.cli.main.main`).

One module per subcommand, each with ``register(subparsers)``: chat_cmd, ask_cmd, models_cmd (with
compile_cmd), bench_cmd, serve_cmd, status_cmd, config_cmd, version_cmd, provision_cmd. ``options``
holds the flags shared by the commands that generate. The commands only parse, call and print: the work
is done by the packages below (service, models, provisioning ...).
"""
