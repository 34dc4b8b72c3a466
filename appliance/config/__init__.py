"""Appliance configuration: the pydantic schema and the layered YAML + env loader.

Exports :class:`ApplianceConfig` (schema), :func:`load_config` and :class:`LoadedConfig` (values plus
where each came from).
"""

from __future__ import annotations

from appliance.config.loader import LoadedConfig, load_config
from appliance.config.schema import ApplianceConfig

__all__ = ["ApplianceConfig", "LoadedConfig", "load_config"]
