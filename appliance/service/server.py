"""Running the service: listeners (own or socket-activated), model load, systemd lifecycle, drain on stop.

Order matters: listeners come first so clients can connect (and read /health 503 "loading") while
the model loads on the engine thread; READY=1 follows the load. A failed load keeps the service up in
the "failed" state so that /health, /api/status and `llm-tpu status` can say why.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import ipaddress
import logging
import os
import signal
import socket
import stat
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from appliance.config.loader import LoadedConfig
from appliance.config.schema import ModelSection
from appliance.errors import (
    ApplianceError,
    ConfigError,
    EngineStalled,
    ModelLoadError,
    ServiceError,
    ServiceStopping,
)
from appliance.models.loader import LoadedModel, load_model
from appliance.service import systemd_integration as sd
from appliance.service.app import create_app
from appliance.service.connection_guard import CappedSockSite, ListenerGuard
from appliance.service.load_gc import with_fewer_gc_passes
from appliance.service.metrics import ServiceMetrics
from appliance.service.model_switch import ModelSwitcher
from appliance.service.scheduler import Scheduler
from appliance.service.state import DeviceProbe, ModelAdmin, ServiceState, device_nodes

__all__ = ["ServiceRunner", "bind_tcp_socket", "bind_unix_socket", "read_token", "run_service"]

log = logging.getLogger("appliance.service")
ModelLoader = Callable[[ModelSection], LoadedModel]


def bind_unix_socket(path: Path, mode: int, group: str | None) -> socket.socket:
    """Create the listening socket at ``path`` with ``mode`` and ``group``; clear errors when we cannot."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServiceError(
            f"cannot create the socket directory {path.parent}: {exc.strerror}",
            hint="run as the service user (systemctl start llm-tpu) or pass --socket in a writable directory",
        ) from None
    if path.exists() or path.is_symlink():
        if not path.is_socket():
            raise ServiceError(
                f"{path} exists and is not a socket", hint="remove it or choose another --socket"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)  # a stale socket left by a process that died
        except OSError as exc:
            raise ServiceError(f"cannot check the existing socket {path}: {exc.strerror}") from None
        else:
            raise ServiceError(
                f"{path} is in use by a running service",
                hint="stop it first (systemctl stop llm-tpu), or pass --socket with another path",
            )
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777 & ~mode)  # the socket never exists with wider permissions
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ServiceError(
            f"cannot create the socket {path}: {exc.strerror}",
            hint="run as the service user (systemctl start llm-tpu) or pass --socket in a writable directory",
        ) from None
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            log.info("group %r does not exist; socket %s keeps its group (user mode)", group, path)
        else:
            try:
                if os.stat(path).st_gid != gid:  # under systemd our primary group already is it
                    os.chown(path, -1, gid)
            except PermissionError:
                log.warning("cannot give socket %s to group %r; only its owner can connect", path, group)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def bind_tcp_socket(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise ServiceError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="choose another server.tcp.port or host, or stop what uses it",
        ) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _check_token_mode(path: str) -> None:
    """A token every local user can read (or replace) protects nothing: refuse it."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return  # read_token says what is wrong with the file
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        what = "read" if mode & stat.S_IROTH else "changed"
        raise ConfigError(
            f"the token file {path} can be {what} by every user (mode {mode:04o})",
            hint=f"chmod 0640 {path} (owner root, group llm-tpu), then start the service again",
        )


def _warn_if_exposed(address: tuple[str, int]) -> None:
    try:
        loopback = ipaddress.ip_address(address[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        log.warning(
            "tcp listener %s:%d is not loopback: the API is reachable from the network (every request "
            "but /health needs the bearer token; use server.tcp.host 127.0.0.1 to keep it on the box)",
            *address,
        )


def read_token(path: str) -> str:
    _check_token_mode(path)
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(
            f"server.tcp is enabled but the token file {path} does not exist",
            hint=f"create it: head -c 32 /dev/urandom | base64 > {path}; chmod 0640 {path}",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc}") from None
    if len(token) < 16:
        raise ConfigError(
            f"the token in {path} is shorter than 16 characters", hint="use a long random token"
        )
    return token


class ServiceRunner:
    """One service instance: start() listens and loads, stop() drains; used by `llm-tpu serve` and tests."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        model_loader: ModelLoader = load_model,
        device_probe: DeviceProbe = device_nodes,
        model_admin: ModelAdmin | None = None,
    ) -> None:
        self.config = loaded.config
        self._loader = with_fewer_gc_passes(model_loader)  # the start-up load and every switch
        self.metrics = ServiceMetrics()
        self.scheduler = Scheduler(
            queue_size=self.config.scheduler.queue_size, metrics=self.metrics, on_change=self._status_changed
        )
        self.state = ServiceState(
            config=self.config,
            scheduler=self.scheduler,
            metrics=self.metrics,
            device_probe=device_probe,
            model_admin=model_admin,
        )
        self.switcher = ModelSwitcher(self.state, self._loader)
        self.state.switcher = self.switcher
        self._runner: web.AppRunner | None = None
        self._own_socket: Path | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.stopped = asyncio.Event()
        self.tcp_address: tuple[str, int] | None = None
        self.loaded = asyncio.Event()

    # -- systemd status ------------------------------------------------------------------------
    def _status_changed(self, running: int, waiting: int) -> None:
        self.switcher.activity(running, waiting)
        if self.state.phase != "ready" or self.state.model is None:
            return
        if running or waiting:
            sd.notify(f"STATUS=serving {running} request(s), {waiting} waiting ({self.state.model.name})")
        else:
            sd.notify(f"STATUS=ready: {self.state.model.name}")

    # -- start ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen and start loading; a start that fails part way leaves no socket or listener behind."""
        try:
            await self._start()
        except BaseException:
            if self._runner is not None:
                with contextlib.suppress(Exception):
                    await self._runner.cleanup()
            if self._own_socket is not None:
                self._own_socket.unlink(missing_ok=True)
            self.scheduler.shutdown()
            raise

    async def _start(self) -> None:
        server = self.config.server
        activated = sd.listen_sockets()
        unix_socks = [s for s in activated if s.family == socket.AF_UNIX]
        tcp_socks = [s for s in activated if s.family in (socket.AF_INET, socket.AF_INET6)]
        if server.tcp.enabled or tcp_socks:
            self.state.tcp_token = read_token(server.tcp.token_file)
        if not unix_socks:
            path = server.resolved_socket_path()
            unix_socks = [bind_unix_socket(path, server.socket_mode, server.socket_group)]
            self._own_socket = path
        self.state.socket_path = Path(unix_socks[0].getsockname() or "")
        app = create_app(self.state)
        self._runner = web.AppRunner(
            app,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=5.0,
            keepalive_timeout=server.idle_timeout_s,
        )
        await self._runner.setup()
        # One guard per listener: idle TCP clients can use up TCP's share, never the Unix socket's.
        local = ListenerGuard("unix socket", server.max_connections, server.header_timeout_s)
        remote = ListenerGuard("tcp", server.tcp.max_connections, server.header_timeout_s)
        for sock in unix_socks:
            await CappedSockSite(self._runner, sock, local).start()
        if tcp_socks:
            for sock in tcp_socks:
                await CappedSockSite(self._runner, sock, remote).start()
            self.tcp_address = tcp_socks[0].getsockname()[:2]
        elif server.tcp.enabled:
            sock = bind_tcp_socket(server.tcp.host, server.tcp.port)
            await CappedSockSite(self._runner, sock, remote).start()
            self.tcp_address = sock.getsockname()[:2]
        if self.tcp_address:
            _warn_if_exposed(self.tcp_address)
        log.info(
            "listening on %s%s%s",
            self.state.socket_path,
            " (socket activation)" if self._own_socket is None else "",
            f" and tcp {self.tcp_address[0]}:{self.tcp_address[1]}" if self.tcp_address else "",
            extra={"SOCKET": str(self.state.socket_path)},
        )
        sd.notify(f"STATUS=loading model {self.config.model.ref} ({self.config.model.engine})")
        interval = sd.watchdog_interval()
        if interval:
            # a stalled engine stops the pings: systemd restarts the service (WatchdogSec)
            healthy = lambda: self.state.phase != "stalled"  # noqa: E731
            self._tasks.append(asyncio.create_task(sd.watchdog_loop(interval, healthy)))
        self._tasks.append(asyncio.create_task(self._load()))
        self._tasks.append(asyncio.create_task(self._watch_engine()))

    async def _load(self) -> None:
        section = self.config.model
        try:
            model = await self.scheduler.run_on_engine_thread(lambda: self._loader(section))
        except ApplianceError as err:
            self._failed(err)
            return
        except Exception as exc:  # any loader bug still ends as a reported state, not a dead service
            log.exception("model load crashed")
            self._failed(ModelLoadError(f"loading {section.ref!r} failed: {type(exc).__name__}: {exc}"))
            return
        if self.state.phase == "stopping":
            await self.scheduler.run_on_engine_thread(model.close)
            return
        model.generator.take_load_duration()  # the start-up load belongs to no request
        self.state.model = model
        self.scheduler.set_generator(model.generator)
        self.switcher.configured_names = frozenset({model.name, *model.aliases})
        self._tasks.append(asyncio.create_task(self.switcher.expiry_loop()))
        self.state.phase = "ready"
        self.metrics.model_state.state("ready")
        self.metrics.load_seconds.set(model.load_duration_ns / 1e9)
        log.info(
            "model %s ready on %s engine",
            model.name,
            model.engine.info.kind,
            extra={"MODEL": model.name, "ENGINE": model.engine.info.kind},
        )
        sd.notify("READY=1", f"STATUS=ready: {model.name}")
        self.loaded.set()

    async def _watch_engine(self) -> None:
        """Notice a device call that never returns: the engine thread reports progress at every step."""
        limit = self.config.engine.stall_timeout_s
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            stalled = self.scheduler.stalled_for()
            if self.state.phase == "ready" and stalled > limit:
                self._stalled(stalled)
                return

    def _stalled(self, seconds: float) -> None:
        err = EngineStalled(
            f"the engine made no progress for {seconds:.0f} s (engine.stall_timeout_s is "
            f"{self.config.engine.stall_timeout_s:g}): a device call is wedged; the service stops its "
            "watchdog so that systemd restarts it",
            hint="if it repeats: journalctl -u llm-tpu, check the TPU with bm-smi, and reboot the box",
        )
        self.state.failure = err
        self.state.phase = "stalled"
        self.metrics.model_state.state("stalled")
        log.error("%s", err.message)
        sd.notify(f"STATUS=error: {err.message}")
        self.scheduler.fail_all(err)

    def _failed(self, err: ApplianceError) -> None:
        self.state.failure = err
        self.state.phase = "failed"
        self.metrics.model_state.state("failed")
        log.error("model load failed: %s%s", err.message, f" (hint: {err.hint})" if err.hint else "")
        # READY=1 all the same: the service stays up to report the failure instead of restart-looping.
        sd.notify("READY=1", f"STATUS=error: {err.message}")
        self.loaded.set()

    # -- stop ----------------------------------------------------------------------------------
    async def stop(self) -> None:
        """Drain: refuse new requests, give running and queued ones drain_timeout_s, cancel the rest."""
        if self.state.phase == "stopping":
            await self.stopped.wait()
            return
        wedged = self.state.phase == "stalled"  # nothing to drain, and the engine thread cannot close
        self.state.phase = "stopping"
        self.metrics.model_state.state("stopping")
        sd.notify("STOPPING=1", "STATUS=stopping: draining requests")
        drained = wedged or await self.scheduler.wait_idle(self.config.scheduler.drain_timeout_s)
        if not drained:
            log.warning(
                "drain timeout: cancelling %d queued and the running request", self.scheduler.queue_depth
            )
            self.scheduler.cancel_all(
                ServiceStopping(
                    f"the service is stopping: the request was cancelled after the drain timeout "
                    f"({self.config.scheduler.drain_timeout_s:g} s)",
                    hint="send it again when the service is back (GET /health answers 200)",
                )
            )
            await self.scheduler.wait_idle(5.0)
        for task in self._tasks:
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.state.model is not None and not wedged:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.scheduler.run_on_engine_thread(self.state.model.close), 10)
        self.scheduler.shutdown()
        if self._own_socket is not None:
            self._own_socket.unlink(missing_ok=True)
        log.info("stopped")
        self.stopped.set()


async def run_service(
    loaded: LoadedConfig,
    *,
    model_loader: ModelLoader = load_model,
    device_probe: DeviceProbe = device_nodes,
    model_admin: ModelAdmin | None = None,
) -> int:
    """`llm-tpu serve`: run until SIGTERM/SIGINT, then drain and exit 0."""
    runner = ServiceRunner(
        loaded, model_loader=model_loader, device_probe=device_probe, model_admin=model_admin
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runner.start()
    await stop.wait()
    log.info("stop requested; draining")
    await runner.stop()
    return 0
