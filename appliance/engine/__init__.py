"""Engines: turn token ids into next-token logits (or tokens) and keep the KV cache.

Public face:

- ``protocol.Engine`` (the protocol every engine implements), with ``EngineInfo``, ``EngineLimits``,
  ``Capabilities``, ``StepOutput`` and ``DeviceSampling``;
- :class:`EngineOptions` (the typed options an engine is opened with) and ``ENGINE_KINDS``;
- ``select.open_engine``: open ``auto`` / ``sail`` / ``bmrt`` / ``host`` on a model directory.

Inside: ``host`` (transformers + torch on CPU), ``bmrt/`` (ctypes over libbmrt, or the x86 cmodel),
``sail`` (the vendor SDK, isolated), ``runner`` (the LLM-TPU net-layout runner shared by bmrt and sail),
``scripted`` (a test engine). Engines know nothing of chats, templates or models: only of bmodels.

Only the light option types are re-exported here: importing the package must not load numpy and every
engine (the config schema and the TUI import engine.options). Import the rest from its module:
``appliance.engine.protocol``, ``appliance.engine.select``.
"""

from __future__ import annotations

from appliance.engine.options import ENGINE_CHOICES, ENGINE_KINDS, EngineChoice, EngineKind, EngineOptions

__all__ = ["ENGINE_CHOICES", "ENGINE_KINDS", "EngineChoice", "EngineKind", "EngineOptions"]
