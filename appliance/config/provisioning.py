"""The ``provisioning:`` section of the appliance config: settings of ``llm-tpu provision`` and first boot.

It lives with the rest of the schema so that the config layer needs nothing above it; the provisioning
package reads it (provisioning.settings.load_settings). Every system path the provisioning code touches
is resolved under :attr:`ProvisioningSettings.sysroot` (``/`` on a box) so that tests can build a fake
board tree in a temporary directory.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ProvisioningSettings"]


class ProvisioningSettings(BaseModel):
    """Settings for ``llm-tpu provision`` and first boot. All sizes are MiB."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sysroot: Path = Field(Path("/"), description="root of every system path (tests use a fake board tree)")
    model: str | None = Field(None, description="model to provision for (name, model dir or .bmodel)")
    cpu_reserve_mib: int = Field(
        4096, ge=0, description="CPU memory that must stay free after the TPU layout (installs need 4 GiB)"
    )
    vpu_reserve_mib: int = Field(
        0, ge=0, description="VPU heap kept for video decoding, never given to the model"
    )
    vpp_reserve_mib: int = Field(
        0, ge=0, description="VPP heap kept for image processing, never given to the model"
    )
    margin_mib: int = Field(256, ge=0, description="extra room over the model's computed need (at least)")
    margin_fraction: float = Field(0.05, ge=0, le=1, description="extra room as a fraction of the need")
    memory_edit: Path | None = Field(None, description="memory_edit.sh, or the directory that holds it")
    memory_edit_kit: str | None = Field(
        None, description="memory_edit_*.tar.xz (path or http(s) URL) for air-gapped or fresh boxes"
    )
    memory_edit_kit_sha256: str | None = Field(
        None, description="sha256 of memory_edit_kit (required for URLs)"
    )
    memory_edit_timeout_s: int = Field(600, gt=0)
    dts_name: str | None = Field(None, description="device tree to edit; default: the one the box booted")
    auto_rollback: bool = Field(True, description="restore the previous boot image when verify fails")
    firstboot_reboot: bool = Field(False, description="let the first-boot unit reboot after staging a layout")
    reboot_command: list[str] = Field(
        default_factory=lambda: ["systemctl", "reboot"], description="run by apply --reboot"
    )
    firstboot_models: list[str] = Field(default_factory=list, description="models to pull at first boot")

    @field_validator("memory_edit_kit_sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and (
            len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower())
        ):
            raise ValueError("must be 64 hex digits")
        return value.lower() if value else value

    def path(self, system_path: str | Path) -> Path:
        """A system path (``/boot/emmcboot.itb``) under the sysroot."""
        rel = str(system_path).lstrip("/")
        return self.sysroot / rel

    @property
    def state_dir(self) -> Path:
        return self.path("/var/lib/llm-tpu/provision")
