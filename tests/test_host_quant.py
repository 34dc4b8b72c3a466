"""Quality of the host engine's quantized weights on the embedded SmolLM2-135M (model.host_quant).

On a short English text shipped with the tests (tests/fixtures/text/quant-eval.txt, about 400 tokens):
top-1 agreement of every next-token prediction with the fp32 weights, and perplexity. The embedded
model's fp32 weights are themselves the GGUF's Q4_1 blocks dequantized, so int4 (groups of 32, scale
and minimum) gets those same blocks back; int8 per channel rounds them once more.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from appliance.engine.host import HostEngine
from appliance.generation.tokenizer import ChatTokenizer
from appliance.models.embedded import ensure_embedded_model

TEXT = Path(__file__).parent / "fixtures" / "text" / "quant-eval.txt"
# Measured on the 2-core x86 dev machine, torch 2.13: top-1 agreement with fp32 int8 0.953, int4 0.977;
# perplexity fp32 21.14, int8 21.43, int4 21.06 (int4 is the GGUF's own Q4_1 blocks, the remaining
# difference is the kernels' bf16 activations). Floors a little under the measured values.
AGREE = {"int8": 0.93, "int4": 0.95}
PPL_RATIO = 1.03


@pytest.fixture(scope="module")
def model_and_ids(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int], Path]:
    model = ensure_embedded_model()
    ids = ChatTokenizer.from_dir(model.tokenizer_dir).encode(TEXT.read_text())
    return model.path, list(ids), tmp_path_factory.mktemp("quant")


def logits(model_dir: Path, quant: str, ids: list[int], cache: Path) -> Any:
    engine = HostEngine(model_dir, threads=2, quant=quant, quant_cache=cache)
    out = engine.all_logits(ids)[:-1]
    engine.close()
    return out


def perplexity(scores: Any, ids: list[int]) -> float:
    nll = torch.nn.functional.cross_entropy(scores, torch.tensor(ids[1:]))
    return math.exp(float(nll))


def test_quantized_weights_agree_with_fp32_on_a_shipped_text(
    model_and_ids: tuple[Path, list[int], Path],
) -> None:
    model_dir, ids, cache = model_and_ids
    assert len(ids) > 300
    ref = logits(model_dir, "none", ids, cache)
    ref_top = ref.argmax(-1)
    ref_ppl = perplexity(ref, ids)
    assert 1.5 < ref_ppl < 30  # a real language model on plain English
    for quant, floor in AGREE.items():
        scores = logits(model_dir, quant, ids, cache)
        agree = float((scores.argmax(-1) == ref_top).float().mean())
        ppl = perplexity(scores, ids)
        print(f"{quant}: top-1 agreement {agree:.3f}, perplexity {ppl:.3f} (fp32 {ref_ppl:.3f})")
        assert agree >= floor, quant
        assert ppl <= ref_ppl * PPL_RATIO, quant
