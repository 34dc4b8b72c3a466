"""The service's model administration (/api/pull, /api/delete): what `llm-tpu models pull`, `models
import` and `models rm` do, passed to the service by `llm-tpu serve` (the service imports nothing of
provisioning; appliance.service.state.ModelAdmin is the interface)."""

from __future__ import annotations

from pathlib import Path

from provisioning import install
from provisioning.pull import pull

__all__ = ["StoreAdmin"]


class StoreAdmin:
    """Installs into and removes from the model store (appliance.service.state.ModelAdmin)."""

    def install(self, ref: str, *, name: str | None, sha256: str | None, tokenizer: str | None) -> Path:
        path = Path(ref).expanduser()
        if path.is_dir():  # a model directory on the box: `llm-tpu models import`
            return install.import_model(path, name)
        # a catalog name, URL, dfss path or a local .bmodel: `llm-tpu models pull`
        return pull(ref, name=name, sha256=sha256, tokenizer=tokenizer, progress=False)

    def remove(self, name: str) -> Path:
        return install.remove_model(name)
