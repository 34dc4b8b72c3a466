"""Sophgo bmodels, read without the vendor runtime.

Public face: :func:`~appliance.bmodel.reader.read_bmodel` (a bounds-checked flatbuffer reader, no
``flatbuffers`` package) -> :class:`BmodelInfo`; :func:`~appliance.bmodel.memory.bmodel_memory` (device
memory figures); ``layout`` (the LLM-TPU net layout the TPU engines run); ``report`` (``models info``).
"""
