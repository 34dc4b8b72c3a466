"""The configuration schema: every key of /etc/llm-tpu/appliance.yaml, with its default and meaning.

The field descriptions are the documentation: ``llm-tpu config show`` prints them and
``etc/appliance.yaml`` repeats them. Unknown keys are errors, so a typo never silently does nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from appliance.config.durations import parse_keep_alive
from appliance.config.provisioning import ProvisioningSettings
from appliance.engine.options import DEFAULT_HOST_QUANT, EngineChoice, HostQuant, parse_device_ids

__all__ = [
    "ApplianceConfig",
    "GenerationDefaults",
    "LoggingSection",
    "ModelSection",
    "SchedulerSection",
    "ScriptedSection",
    "ServerSection",
    "TcpSection",
    "default_socket_path",
    "system_socket_path",
]

SYSTEM_SOCKET = Path("/run/llm-tpu/llm.sock")


def system_socket_path() -> Path:
    return SYSTEM_SOCKET


def default_socket_path() -> Path:
    """Where the socket lives when the config does not say.

    Under systemd the unit's RuntimeDirectory is in $RUNTIME_DIRECTORY; root gets the system path; any
    other user gets $XDG_RUNTIME_DIR/llm-tpu (user mode, for development).
    """
    runtime_dir = os.environ.get("RUNTIME_DIRECTORY")
    if runtime_dir:
        return Path(runtime_dir.split(":")[0]) / "llm.sock"
    if os.geteuid() == 0:
        return SYSTEM_SOCKET
    xdg = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/llm-tpu-{os.geteuid()}"
    return Path(xdg) / "llm-tpu" / "llm.sock"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ScriptedSection(_Section):
    text: str = Field(
        "The quick brown fox jumps over the lazy dog. ",
        description="text the scripted engine repeats (engine: scripted only; for tests and benchmarks)",
    )
    step_delay_ms: float = Field(0.0, ge=0, description="sleep per generated token, simulating a device")
    prefill_delay_ms: float = Field(0.0, ge=0, description="sleep per prefilled token")
    wedge_after_tokens: int | None = Field(
        None, ge=0, description="hang forever in the device call after this many tokens (stall tests)"
    )


class ModelSection(_Section):
    ref: str = Field(
        "default",
        description="model to serve: a name from `llm-tpu models list` or a path to a model directory",
    )
    engine: EngineChoice = Field(
        "auto",
        description="auto picks sail, then bmrt on a real device, then host; scripted is a test engine",
    )
    name: str | None = Field(
        None, description="name the APIs report for the model (null: the model's own name)"
    )
    threads: int | None = Field(None, ge=1, description="CPU threads of the host engine (null: all cores)")
    host_quant: HostQuant = Field(
        DEFAULT_HOST_QUANT,
        description="weights of the host engine: none (as the model ships them), int8 or int4 "
        "(weight-only on torch's CPU kernels, quantized once and cached); auto: int4 for weights that "
        "came from a 4-bit GGUF (the embedded model), none otherwise",
    )
    libdir: str | None = Field(
        None,
        description="bmrt runtime libraries (null: libsophon on the box; a cmodel directory for development)",
    )
    decrypt_lib: str | None = Field(
        None, description="cipher library exporting decrypt(), for encrypted bmodels (null: none)"
    )
    devices: tuple[int, ...] | None = Field(
        None,
        description='TPU device ids for a bmodel compiled for several chips, e.g. [2, 3] or "2,3" '
        "(the vendor demos' --devid); as many as the bmodel's devices (null: 0 .. N-1)",
    )
    pinned: bool = Field(
        False,
        description="serve only this model: requests naming another installed model get 404 instead of "
        "unloading this one and loading theirs, and keep_alive never unloads it",
    )
    keep_alive: float | str = Field(
        -1,
        description="how long a model stays loaded after its last request when the request gives no "
        'keep_alive: seconds or a duration ("5m", "1h"); 0 unloads at once, negative never',
    )
    scripted: ScriptedSection = Field(default_factory=ScriptedSection)  # type: ignore[arg-type]

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive(cls, value: float | str) -> float | str:
        parse_keep_alive(value)  # raises ValueError with the reason
        return value

    @field_validator("devices", mode="before")
    @classmethod
    def _device_ids(cls, value: Any) -> Any:
        return None if value is None else parse_device_ids(value)


class TcpSection(_Section):
    enabled: bool = Field(False, description="also listen on TCP (for openai/ollama clients off the box)")
    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 exposes the API to the network")
    port: int = Field(11435, ge=0, le=65535, description="TCP port (0: any free port, for tests)")
    max_connections: int = Field(
        256,
        ge=1,
        description="open TCP connections at most; more get 503 at once (the Unix socket has its own)",
    )
    token_file: str = Field(
        "/etc/llm-tpu/api-token",
        description="file holding the bearer token every TCP request except /health must send",
    )
    admin_api: bool = Field(
        False,
        description="also allow /api/pull and /api/delete (install and delete models) over TCP; they are "
        "always allowed on the Unix socket, whose group (llm-tpu) is the access control",
    )


class ServerSection(_Section):
    socket_path: str | None = Field(
        None,
        description="Unix socket path (null: /run/llm-tpu/llm.sock as a system service, "
        "$XDG_RUNTIME_DIR/llm-tpu/llm.sock in user mode)",
    )
    socket_mode: int = Field(0o660, description="permission bits of the socket, octal (e.g. 0660)")
    socket_group: str | None = Field(
        "llm-tpu", description="group that may use the socket (null: leave the group as created)"
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="largest request body accepted; larger ones get 413"
    )
    max_connections: int = Field(
        1024, ge=1, description="open connections on the Unix socket at most; more get 503 at once"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="a connection must send its request headers within this time, or is closed"
    )
    idle_timeout_s: float = Field(
        30.0, gt=0, description="an idle keep-alive connection is closed after this time"
    )
    tcp: TcpSection = Field(default_factory=TcpSection)  # type: ignore[arg-type]

    @field_validator("socket_mode", mode="before")
    @classmethod
    def _octal(cls, value: Any) -> Any:
        # YAML 1.1 already turns 0660 into 432; a quoted "0660" or "660" is read as octal digits.
        if isinstance(value, str):
            try:
                return int(value, 8)
            except ValueError:
                raise ValueError(f"{value!r} is not an octal mode such as 0660") from None
        return value

    @field_validator("socket_mode")
    @classmethod
    def _mode_range(cls, value: int) -> int:
        if not 0 <= value <= 0o777:
            raise ValueError(f"{oct(value)} is not a permission mode between 0000 and 0777")
        return value

    def resolved_socket_path(self) -> Path:
        return Path(self.socket_path) if self.socket_path else default_socket_path()


class SchedulerSection(_Section):
    queue_size: int = Field(
        8, ge=0, description="requests that may wait while one generates; more get 503 busy"
    )
    request_timeout_s: float = Field(
        600.0, gt=0, description="deadline per request, queueing included; generation stops when it passes"
    )
    drain_timeout_s: float = Field(
        20.0, ge=0, description="on stop, time given to running and queued requests before they are cancelled"
    )
    retry_after_s: int = Field(2, ge=1, description="Retry-After seconds sent with 503 busy and loading")


class EngineSection(_Section):
    stall_timeout_s: float = Field(
        120.0,
        gt=0,
        description="a request making no progress (no token, no prefill) this long means a wedged engine "
        "call: /health turns 503, waiting clients get an error and the watchdog stops so systemd restarts",
    )


class GenerationDefaults(_Section):
    """Defaults for requests (and commands) that do not set these themselves: the one source of them.

    Sampling with a mild repetition penalty (close to Ollama's), since greedy decoding makes small
    models loop. A served model's generation_config.json overrides each value not set in the config
    (appliance.generation.defaults)."""

    max_tokens: int = Field(1024, ge=1, description="tokens generated when a request gives no limit")
    temperature: float = Field(
        0.7, ge=0, description="sampling temperature (0: greedy; unless set here, the model's own)"
    )
    top_k: int = Field(0, ge=0, description="top-k (0: off; unless set here, the model's own)")
    top_p: float = Field(0.9, gt=0, le=1, description="nucleus top-p (unless set here, the model's own)")
    repetition_penalty: float = Field(
        1.1, gt=0, description="repetition penalty (1.0: off; unless set here, the model's own)"
    )
    repeat_last_n: int = Field(64, ge=0, description="how many recent tokens the penalty looks at")


class LoggingSection(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")


class ApplianceConfig(_Section):
    """The whole configuration; each section is optional in the files."""

    model: ModelSection = Field(default_factory=ModelSection)  # type: ignore[arg-type]
    server: ServerSection = Field(default_factory=ServerSection)  # type: ignore[arg-type]
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)  # type: ignore[arg-type]
    engine: EngineSection = Field(default_factory=EngineSection)  # type: ignore[arg-type]
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)  # type: ignore[arg-type]
    logging: LoggingSection = Field(default_factory=LoggingSection)  # type: ignore[arg-type]
    provisioning: ProvisioningSettings = Field(default_factory=ProvisioningSettings)  # type: ignore[arg-type]
