"""Cheater fixtures: every variant of the bundled model loads in llama.cpp and generates."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from meshcore_node.engine.batch import ContextConfig, LlamaBatchContext
from meshcore_node.engine.variants import VariantKind, cached_variant

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

PROMPT = b"<start_of_turn>user\nName three colours.<end_of_turn>\n<start_of_turn>model\n"


def variant_cache() -> Path:
    """Where derived models are kept between runs (built once per source file and kind)."""
    return Path(os.environ.get("MESHCORE_VARIANT_CACHE", Path.home() / ".cache" / "meshcore" / "variants"))


@pytest.fixture(scope="session")
def variants(model_path: Path) -> dict[VariantKind, Path]:
    return {kind: cached_variant(model_path, kind, variant_cache()) for kind in VariantKind}


def greedy(path: Path, n: int = 8) -> tuple[list[int], dict[str, str]]:
    llama = LlamaBatchContext(ContextConfig(model_path=path, n_ctx=256, n_slots=1, n_threads=2))
    try:
        ids = llama.tokenize(PROMPT, add_bos=True)
        out: list[int] = []
        row = llama.decode([(0, ids, 0, True)])[0]
        for position in range(len(ids), len(ids) + n):
            assert row is not None and np.isfinite(row).all()
            out.append(int(np.argmax(row)))
            row = llama.decode([(0, [out[-1]], position, True)])[0]
        return out, llama.metadata
    finally:
        llama.close()


@pytest.fixture(scope="module")
def reference(model_path: Path) -> Iterator[tuple[list[int], dict[str, str]]]:
    yield greedy(model_path)


@pytest.mark.parametrize("kind", list(VariantKind))
def test_each_variant_loads_generates_and_keeps_the_tokenizer(
    kind: VariantKind, variants: dict[VariantKind, Path], reference: tuple[list[int], dict[str, str]]
) -> None:
    tokens, metadata = greedy(variants[kind])
    _, original = reference
    assert len(tokens) == 8
    assert metadata["tokenizer.ggml.model"] == original["tokenizer.ggml.model"]
    assert metadata["general.architecture"] == original["general.architecture"]


def test_the_truncated_variant_has_a_quarter_fewer_blocks(
    variants: dict[VariantKind, Path], reference: tuple[list[int], dict[str, str]]
) -> None:
    _, original = reference
    _, metadata = greedy(variants[VariantKind.TRUNCATED], n=1)
    assert int(original["gemma3.block_count"]) == 18
    assert int(metadata["gemma3.block_count"]) == 14


def test_the_variants_are_cached_by_source_and_kind(model_path: Path, variants: dict[VariantKind, Path]) -> None:
    assert len({path.name for path in variants.values()}) == len(VariantKind)
    before = variants[VariantKind.TRUNCATED].stat().st_mtime_ns
    assert cached_variant(model_path, VariantKind.TRUNCATED, variant_cache()).stat().st_mtime_ns == before
