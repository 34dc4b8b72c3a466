"""The collector's thresholds while models load: raised during every load, CPython's back afterwards."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.service import scripted_settings, write_config

from appliance.config import load_config
from appliance.config.schema import ModelSection
from appliance.models.loader import LoadedModel, load_model
from appliance.service.load_gc import LOAD_GC_THRESHOLD, fewer_gc_passes, with_fewer_gc_passes
from appliance.service.server import ServiceRunner

OWN = (701, 11, 12)  # not CPython's defaults: restoring must give back what was set, not a constant


@pytest.fixture
def own_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(*OWN)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def test_a_load_raises_the_first_threshold_and_gives_back_the_old_ones(own_thresholds: None) -> None:
    seen = with_fewer_gc_passes(lambda _: gc.get_threshold())(None)
    assert seen == (LOAD_GC_THRESHOLD, 11, 12)
    assert gc.get_threshold() == OWN


def test_a_failing_load_gives_the_thresholds_back(own_thresholds: None) -> None:
    def broken(_: object) -> None:
        raise RuntimeError("no weights")

    with pytest.raises(RuntimeError):
        with_fewer_gc_passes(broken)(None)
    assert gc.get_threshold() == OWN


def test_overlapping_loads_give_them_back_when_the_last_one_ends(own_thresholds: None) -> None:
    first_in, second_done = threading.Event(), threading.Event()
    seen: list[tuple[int, int, int]] = []

    def first() -> None:
        with fewer_gc_passes():
            first_in.set()
            assert second_done.wait(10)
            seen.append(gc.get_threshold())  # the second load ended: still raised for this one

    thread = threading.Thread(target=first)
    thread.start()
    assert first_in.wait(10)
    with fewer_gc_passes():
        pass
    second_done.set()
    thread.join(10)
    assert seen == [(LOAD_GC_THRESHOLD, 11, 12)]
    assert gc.get_threshold() == OWN


def test_the_service_loads_its_model_under_it(tmp_path: Path, own_thresholds: None) -> None:
    cfg = write_config(tmp_path, scripted_settings(tmp_path / "llm.sock"))
    seen: list[tuple[int, int, int]] = []

    def loader(section: ModelSection) -> LoadedModel:
        seen.append(gc.get_threshold())
        return load_model(section)

    async def run() -> None:
        runner = ServiceRunner(load_config(cfg, env={}), model_loader=loader)
        await runner.start()
        try:
            await asyncio.wait_for(runner.loaded.wait(), 30)
            assert runner.state.phase == "ready"
        finally:
            await runner.stop()

    asyncio.run(run())
    assert seen == [(LOAD_GC_THRESHOLD, 11, 12)]
    assert gc.get_threshold() == OWN
