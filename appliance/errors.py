"""The one error hierarchy of llm-tpu-appliance.

Every error a user can cause or meet is an :class:`ApplianceError`. Each carries a message that says
what went wrong and, where there is one, a ``hint`` that says what to do. The CLI prints
``error: <message>`` (and ``hint: <hint>``) and exits with :attr:`ApplianceError.exit_code`; the
service turns them into JSON with :attr:`ApplianceError.http_status`.

    ApplianceError
    ├── ConfigError                  bad config file, key or value
    ├── InvalidRequest               malformed chat request (empty messages, bad role, bad option)
    │   ├── ContextOverflow          the new message alone does not fit the model's context
    │   └── InvalidModelName         a model name outside the grammar of appliance/models/names.py
    ├── ModelError
    │   ├── ModelNotFound            no such model in the store / no such file
    │   ├── ModelFormatError         a file is not what it claims (truncated, garbage, encrypted)
    │   └── ModelLoadError           the engine could not load a model
    ├── EngineError                  a runtime call failed while running a model
    │   ├── EngineUnavailable        the engine cannot run on this machine (no TPU, no sail, no torch)
    │   ├── EngineStalled            a device call made no progress for engine.stall_timeout_s
    │   └── InsufficientTPUMemory    the device could not allocate what the model needs
    ├── ServiceError
    │   ├── ServiceUnavailable       the service is loading, failed or not reachable
    │   │   └── ServiceStopping      the service stopped before the request was done (drain timeout)
    │   ├── QueueFull                too many requests are waiting
    │   └── RequestCancelled         the client went away or the deadline passed
    │       └── DeadlineExceeded     the request's deadline passed (queued or generating)
    ├── CompileError                 compiling a model to a bmodel failed (a tool, a missing prerequisite)
    └── ProvisioningError            TPU memory layout, memory_edit, model install, first boot
        ├── LayoutDoesNotFit         no layout within the board's maxima holds the model
        ├── BootImageError           the produced boot image failed verification
        ├── UnsupportedBoard         not a BM1684X box (e.g. a BM1688 SE9): no layout is planned
        └── DownloadError            a model download failed (network, checksum, disk)
"""

from __future__ import annotations

__all__ = [
    "ApplianceError",
    "BootImageError",
    "CompileError",
    "ConfigError",
    "ContextOverflow",
    "DeadlineExceeded",
    "DownloadError",
    "EngineError",
    "EngineStalled",
    "EngineUnavailable",
    "InsufficientTPUMemory",
    "InvalidModelName",
    "InvalidRequest",
    "LayoutDoesNotFit",
    "ModelError",
    "ModelFormatError",
    "ModelLoadError",
    "ModelNotFound",
    "ProvisioningError",
    "QueueFull",
    "RequestCancelled",
    "ServiceError",
    "ServiceStopping",
    "ServiceUnavailable",
    "UnsupportedBoard",
    "error_class",
]


class ApplianceError(Exception):
    """Base of every error the appliance reports to a person."""

    exit_code: int = 1
    http_status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, str]:
        out = {"error": self.message, "code": self.code}
        if self.hint:
            out["hint"] = self.hint
        return out


class ConfigError(ApplianceError):
    exit_code = 2
    http_status = 500
    code = "config_error"


class InvalidRequest(ApplianceError):
    exit_code = 2
    http_status = 400
    code = "invalid_request"


class ContextOverflow(InvalidRequest):
    code = "context_length_exceeded"


class InvalidModelName(InvalidRequest):
    code = "invalid_model_name"


class ModelError(ApplianceError):
    code = "model_error"


class ModelNotFound(ModelError):
    exit_code = 2
    http_status = 404
    code = "model_not_found"


class ModelFormatError(ModelError):
    exit_code = 2
    http_status = 500
    code = "model_format_error"


class ModelLoadError(ModelError):
    http_status = 503
    code = "model_load_error"


class EngineError(ApplianceError):
    http_status = 500
    code = "engine_error"


class EngineUnavailable(EngineError):
    http_status = 503
    code = "engine_unavailable"


class EngineStalled(EngineError):
    http_status = 503
    code = "engine_stalled"


class InsufficientTPUMemory(EngineError):
    http_status = 503
    code = "insufficient_tpu_memory"


class ModelDoesNotFit(InsufficientTPUMemory):
    """A request names a model whose TPU memory need exceeds what the heaps can give it, even with the
    loaded model unloaded: nothing was unloaded, and retrying will not help (507, no Retry-After)."""

    http_status = 507
    code = "model_does_not_fit"


class CompileError(ApplianceError):
    exit_code = 3
    code = "compile_error"


class ServiceError(ApplianceError):
    http_status = 503
    code = "service_error"


class ServiceUnavailable(ServiceError):
    code = "service_unavailable"


class ServiceStopping(ServiceUnavailable):
    code = "stopping"


class QueueFull(ServiceError):
    code = "busy"


class RequestCancelled(ServiceError):
    http_status = 499
    code = "cancelled"


class DeadlineExceeded(RequestCancelled):
    http_status = 504
    code = "deadline_exceeded"


class ProvisioningError(ApplianceError):
    code = "provisioning_error"


class LayoutDoesNotFit(ProvisioningError):
    code = "layout_does_not_fit"


class BootImageError(ProvisioningError):
    code = "boot_image_error"


class UnsupportedBoard(ProvisioningError):
    exit_code = 2
    code = "unsupported_board"


class DownloadError(ProvisioningError):
    code = "download_error"


def _with_own_code(cls: type[ApplianceError]) -> list[type[ApplianceError]]:
    found = [cls] if "code" in vars(cls) else []
    for sub in cls.__subclasses__():
        found += _with_own_code(sub)
    return found


def error_class(code: str | None) -> type[ApplianceError]:
    """The error class whose ``code`` a service's JSON error carries (ServiceError for an unknown code).

    Read from the tree above, so that a client turns every code the service sends back into the class
    that raised it, with no table to keep in step.
    """
    by_code = {cls.code: cls for cls in _with_own_code(ApplianceError)}
    return by_code.get(code or "", ServiceError)
