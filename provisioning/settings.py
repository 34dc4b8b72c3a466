"""How the provisioning code reads its settings: the ``provisioning:`` section of the appliance config.

The section itself (:class:`~appliance.config.provisioning.ProvisioningSettings`) is part of the config
schema; this module is the one loader the provisioning commands use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.config.loader import load_config
from appliance.config.provisioning import ProvisioningSettings

__all__ = ["load_settings"]


def load_settings(config_file: Path | None = None, **overrides: Any) -> ProvisioningSettings:
    """The ``provisioning:`` section of the appliance config (one loader: appliance.config), then overrides."""
    flags = {f"provisioning.{k}": v for k, v in overrides.items() if v is not None}
    return load_config(config_file, overrides=flags).config.provisioning
