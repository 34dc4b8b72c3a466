"""What ``default`` means on a box with a TPU: the BM1684X build of the embedded model that the Debian
package ``llm-tpu-model-smollm2-135m`` installs (``make model-deb`` compiles it from the same GGUF the
host engine serves), when a TPU device node exists and the package is installed. Without a TPU, or
without the package, ``default`` stays the host engine's embedded copy (appliance.models.embedded).

Of the package's two builds the bf16 one is the default: it gives the host engine's answers (checked
by ``make verify-default-bmodel``); the w4bf16 build is there by name for speed over fidelity.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from appliance.engine.select import tpu_present
from appliance.errors import ApplianceError
from appliance.models.manifest import MANIFEST_NAME, InstalledModel, read_manifest

__all__ = ["PACKAGE", "TPU_BUILDS", "TPU_DEFAULT", "packaged_tpu_default"]

log = logging.getLogger(__name__)

PACKAGE = "llm-tpu-model-smollm2-135m"
SEQ = 512
TPU_BUILDS = {quant: f"smollm2-135m-instruct-{quant}-seq{SEQ}" for quant in ("bf16", "w4bf16")}
TPU_DEFAULT = TPU_BUILDS["bf16"]


def packaged_tpu_default(roots: Sequence[Path]) -> InstalledModel | None:
    """The packaged TPU build when this machine has a TPU and the package is installed, else None."""
    if not tpu_present():
        return None
    for root in roots:
        d = root / TPU_DEFAULT
        if not (d / MANIFEST_NAME).is_file():
            continue
        try:
            model = InstalledModel(d, read_manifest(d))
        except ApplianceError as err:  # a damaged install must not leave the box without a model
            log.warning("default: %s is damaged (%s); using the embedded host model", d, err.message)
            return None
        log.info("default: %s on the TPU (%s)", model.name, d)
        return model
    return None
