"""`llm-tpu models compile`: a Hugging Face model (or a GGUF) to a BM1684X bmodel.

Public face: :func:`~appliance.compile.driver.compile_bmodel` (with :class:`BuildOptions` from
``plan`` and :class:`CompileResult`). Inside: ``sources`` finds the input, ``source`` reads its config
and tensors, ``nets`` and ``mlir_text`` write the MLIR and npz, ``toolchain`` drives the vendor's
tpuc-opt and model_tool, ``workdir`` keeps resumable per-net work.
"""
