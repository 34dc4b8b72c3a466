"""The bmrt engine: an LLM bmodel on libsophon (a BM1684X device) or on the x86 cmodel."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from appliance.bmodel.layout import LayoutError, discover_layout
from appliance.bmodel.reader import read_bmodel
from appliance.engine.bmrt.lib import find_libdir, load_libs
from appliance.engine.bmrt.runtime import BmrtBackend
from appliance.engine.options import check_device_count
from appliance.engine.protocol import EngineInfo
from appliance.engine.runner import SUFFIX_DECODE_MAX, LlmRunner, layout_details
from appliance.errors import ModelFormatError, ModelLoadError

__all__ = ["BmrtEngine"]

log = logging.getLogger(__name__)


class BmrtEngine(LlmRunner):
    """Engine protocol over bmrt. ``open`` finds the runtime, loads the bmodel, checks the layout."""

    @classmethod
    def open(
        cls,
        bmodel: Path | str,
        *,
        libdir: str | Path | None = None,
        allow_cmodel: bool = False,
        devices: Sequence[int] | None = None,
        decrypt_lib: str | Path | None = None,
        suffix_decode_max: int = SUFFIX_DECODE_MAX,
        vocab_size: int | None = None,
    ) -> BmrtEngine:
        bmodel = Path(bmodel)
        device_num = 1
        try:
            device_num = read_bmodel(bmodel).device_num
        except ModelFormatError as err:
            # An encrypted bmodel cannot be read without its key; the runtime decrypts it on load.
            if not (decrypt_lib and "encrypted" in err.message):
                if "encrypted" in err.message:
                    raise ModelFormatError(
                        err.message,
                        hint="pass the cipher library that decrypts it: --decrypt-lib PATH (config: model.decrypt_lib)",
                    ) from None
                raise
        devices = check_device_count(bmodel.name, device_num, devices)
        libs = load_libs(find_libdir(libdir, allow_cmodel=allow_cmodel))
        backend = BmrtBackend(
            libs, bmodel, devices=devices, decrypt_lib=Path(decrypt_lib) if decrypt_lib else None
        )
        try:
            layout = discover_layout(list(backend.nets.values()), device_num=device_num)
        except LayoutError as exc:
            backend.close()
            raise ModelLoadError(
                f"{bmodel.name} is not a bmodel this engine can run: {exc}",
                hint="use an LLM-TPU / tpu-mlir llm_convert bmodel (llm-tpu models info FILE shows its nets)",
            ) from None
        details = {"libdir": str(libs.libdir), "runtime": "cmodel" if libs.is_cmodel else "libsophon"}
        details |= layout_details(layout)
        info = EngineInfo(kind="bmrt", model_path=str(bmodel), details=details)
        try:
            return cls(backend, layout, info, suffix_decode_max=suffix_decode_max, vocab_size=vocab_size)
        except BaseException:
            backend.close()
            raise
