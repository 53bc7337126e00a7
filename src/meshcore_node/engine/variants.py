"""Cheater fixtures: cheaper or different models derived from a pinned GGUF with the ``gguf`` package.

Theory of operation (research §5 and §7/T0)
----------------------------------------------
A cheating worker runs something cheaper than the pinned model and claims the
pinned one.  The audits must catch that, so the tests and
``benchmarks/audit.py`` need such models.  No smaller sibling of the bundled
Gemma 3 270M with the same tokenizer is packaged, so this module derives them
from the pinned file itself.  Every variant keeps the tokenizer and all
metadata (only ``<arch>.block_count`` changes, for truncation):

* ``q4_0``: every quantized matrix re-quantized to Q4_0 (a real llama.cpp type;
  the source is mostly Q5_0 with some Q4_K/Q6_K/Q8_0: a one-level downgrade).
* ``q3_levels``: the block matrices rounded to 8 levels per 32-weight block
  (a scale and a minimum in fp16, like a "Q3_1"), the token embedding (the tied
  output matrix) to Q4_0.  ``gguf.quants`` writes only BF16, Q4_0, Q4_1, Q5_0,
  Q5_1, Q8_0, TQ1_0, TQ2_0 and MXFP4, none of llama.cpp's 2-3 bit K-quants, so
  the 3-bit blocks are stored in Q4_1 blocks that use 8 of their 16 levels:
  the numbers of a 3-bit model in a 4-bit container.  Its quality is that of a
  ~3-bit quantization; it is not cheaper to run than Q4_1.
* ``truncated``: the last quarter of the blocks dropped (a crude smaller model).
* ``noise_1pct``: Gaussian noise at 1% of each matrix's std (a fine-tune or
  model-swap proxy), stored as Q8_0 (whose rounding step, about 2.4% of the std,
  is too coarse to hold the noise in the source types without flipping levels
  at random).  Norm vectors are kept as they are.

:func:`cached_variant` builds each variant once per source file (keyed by the
source's SHA-256 and the kind) under a directory the caller passes.
"""

from __future__ import annotations

import enum
import hashlib
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from meshcore_sdk.protocol.errors import ConfigError

__all__ = ["VariantKind", "cached_variant", "derive_variant", "source_digest"]

KEEP_FRACTION: Final = 0.75
"""The share of blocks a truncated variant keeps (rounded up)."""

NOISE_FRACTION: Final = 0.01
"""The noise std of ``noise_1pct``, as a fraction of each matrix's std."""

NOISE_SEED: Final = 20250601

Weights = npt.NDArray[np.float32]


class VariantKind(enum.StrEnum):
    """Which cheaper or different model to derive (see the module docstring)."""

    Q4_0 = "q4_0"
    Q3_LEVELS = "q3_levels"
    TRUNCATED = "truncated"
    NOISE_1PCT = "noise_1pct"


def source_digest(path: Path) -> str:
    """The hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def cached_variant(source: Path, kind: VariantKind, cache_dir: Path) -> Path:
    """The ``kind`` variant of ``source`` under ``cache_dir``, built on first use."""
    dest = cache_dir / f"{source_digest(source)[:16]}-{kind.value}.gguf"
    if not dest.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = dest.with_suffix(f".{os.getpid()}.partial")
        derive_variant(source, partial, kind)
        os.replace(partial, dest)
    return dest


def derive_variant(source: Path, dest: Path, kind: VariantKind) -> Path:
    """Write the ``kind`` variant of the GGUF ``source`` to ``dest``."""
    model = _GgufFile.read(source)
    block_key, n_blocks = model.block_count()
    keep = math.ceil(n_blocks * KEEP_FRACTION) if kind is VariantKind.TRUNCATED else n_blocks
    transform = _TRANSFORMS[kind]
    rng = np.random.default_rng(NOISE_SEED)
    tensors = []
    for info in model.tensors:
        if _block_index(info.name) >= keep:
            continue
        data, qtype = transform(info, rng)
        tensors.append(_Tensor(info.name, info.shape, int(qtype), np.ascontiguousarray(data).view(np.uint8)))
    model.write(dest, tensors, changes={block_key: keep})
    return dest


class _Tensor:
    """One tensor: its name, ggml shape (row length first), ggml type and raw bytes."""

    def __init__(self, name: str, shape: tuple[int, ...], tensor_type: int, data: npt.NDArray[np.uint8]) -> None:
        self.name = name
        self.shape = shape
        self.tensor_type = tensor_type
        self.raw = data

    @property
    def data(self) -> npt.NDArray[Any]:
        """The bytes as gguf-py lays them out: ``[rows, bytes per row]`` (float32 values for F32)."""
        rows = int(np.prod(self.shape[1:]))
        if self.tensor_type == 0:  # F32
            return self.raw.view(np.float32).reshape(rows, self.shape[0])
        return self.raw.reshape(rows, -1)


class _GgufFile:
    """Just enough GGUF v3 to copy a model: the key-value section is kept as raw bytes.

    ``gguf.GGUFReader`` parses every vocabulary entry into numpy views (about 12 s
    for Gemma's 262,144 tokens); a variant only needs to copy them.
    """

    def __init__(self, path: Path, kv: list[tuple[str, int, bytes]], tensors: list[_Tensor], alignment: int) -> None:
        self.path = path
        self.kv = kv  # (key, value type, raw value bytes)
        self.tensors = tensors
        self.alignment = alignment

    @classmethod
    def read(cls, path: Path) -> _GgufFile:
        buffer = np.memmap(path, dtype=np.uint8, mode="r")
        view = memoryview(buffer.data)
        magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", view, 0)
        if magic != b"GGUF" or version != 3:
            raise ConfigError(f"{path} is not a GGUF v3 file")
        at = 24
        kv: list[tuple[str, int, bytes]] = []
        for _ in range(n_kv):
            key, at = _string(view, at)
            (value_type,) = struct.unpack_from("<I", view, at)
            end = _skip_value(view, at + 4, value_type)
            kv.append((key, value_type, bytes(view[at + 4 : end])))
            at = end
        infos = []
        for _ in range(n_tensors):
            name, at = _string(view, at)
            (n_dims,) = struct.unpack_from("<I", view, at)
            shape = struct.unpack_from(f"<{n_dims}Q", view, at + 4)
            tensor_type, offset = struct.unpack_from("<IQ", view, at + 4 + 8 * n_dims)
            at += 4 + 8 * n_dims + 12
            infos.append((name, tuple(int(d) for d in shape), int(tensor_type), int(offset)))
        model = cls(path, kv, [], 32)
        alignment = model.scalar("general.alignment") or 32
        data_start = -(-at // alignment) * alignment
        for name, shape, tensor_type, offset in infos:
            size = _nbytes(shape, tensor_type)
            start = data_start + offset
            model.tensors.append(_Tensor(name, shape, tensor_type, buffer[start : start + size]))
        model.alignment = alignment
        return model

    def scalar(self, key: str) -> int | None:
        """An unsigned integer field, or None when absent."""
        for name, value_type, raw in self.kv:
            if name == key:
                return int.from_bytes(raw, "little") if value_type in _UINT_TYPES else None
        return None

    def block_count(self) -> tuple[str, int]:
        """The key ``<arch>.block_count`` and its value."""
        arch = next(raw[8:].decode() for name, _, raw in self.kv if name == "general.architecture")
        key = f"{arch}.block_count"
        count = self.scalar(key)
        if count is None:
            raise ConfigError(f"{self.path} has no {key}")
        return key, count

    def write(self, dest: Path, tensors: list[_Tensor], *, changes: dict[str, int]) -> None:
        """Write the fields (unsigned integers in ``changes`` replaced) and ``tensors`` to ``dest``."""
        align = self.alignment
        with dest.open("wb") as out:
            out.write(struct.pack("<4sIQQ", b"GGUF", 3, len(tensors), len(self.kv)))
            for key, value_type, raw in self.kv:
                if key in changes:
                    raw = changes[key].to_bytes(len(raw), "little")
                out.write(_pack_string(key) + struct.pack("<I", value_type) + raw)
            offset = 0
            for tensor in tensors:
                out.write(
                    _pack_string(tensor.name) + struct.pack(f"<I{len(tensor.shape)}Q", len(tensor.shape), *tensor.shape)
                )
                out.write(struct.pack("<IQ", tensor.tensor_type, offset))
                offset += -(-tensor.raw.nbytes // align) * align
            out.write(b"\0" * (-out.tell() % align))
            for tensor in tensors:
                out.write(tensor.raw.tobytes())
                out.write(b"\0" * (-tensor.raw.nbytes % align))


_UINT_TYPES: Final = {0: 1, 2: 2, 4: 4, 10: 8}  # GGUF value types UINT8, UINT16, UINT32, UINT64
_FIXED_SIZES: Final = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING: Final = 8
_ARRAY: Final = 9


def _string(view: memoryview, at: int) -> tuple[str, int]:
    (size,) = struct.unpack_from("<Q", view, at)
    return bytes(view[at + 8 : at + 8 + size]).decode("utf-8"), at + 8 + size


def _pack_string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def _skip_value(view: memoryview, at: int, value_type: int) -> int:
    if value_type in _FIXED_SIZES:
        return at + _FIXED_SIZES[value_type]
    if value_type == _STRING:
        size: int = struct.unpack_from("<Q", view, at)[0]
        return at + 8 + size
    if value_type != _ARRAY:
        raise ConfigError(f"unknown GGUF value type {value_type}")
    item_type, count = (int(v) for v in struct.unpack_from("<IQ", view, at))
    at += 12
    if item_type in _FIXED_SIZES:
        return at + count * _FIXED_SIZES[item_type]
    for _ in range(count):
        at = _skip_value(view, at, item_type)
    return at


def _nbytes(shape: tuple[int, ...], tensor_type: int) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(tensor_type)]
    return int(np.prod(shape)) // block * size


def _block_index(name: str) -> int:
    """The block number of a ``blk.N.`` tensor, -1 for the others."""
    return int(name.split(".")[1]) if name.startswith("blk.") else -1


def _is_matrix(tensor: Any) -> bool:
    return len(tensor.shape) >= 2 and int(np.prod(tensor.shape[1:])) > 1


def _float(tensor: Any) -> Weights:
    from gguf import GGMLQuantizationType, quants

    return np.asarray(quants.dequantize(tensor.data, GGMLQuantizationType(tensor.tensor_type)), dtype=np.float32)


def _keep(tensor: Any, _rng: np.random.Generator) -> tuple[npt.NDArray[Any], Any]:
    return tensor.raw, tensor.tensor_type


def _quantized(tensor: Any) -> bool:
    from gguf import GGMLQuantizationType

    return tensor.tensor_type not in (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16)


def _to_q4_0(tensor: Any, rng: np.random.Generator) -> tuple[npt.NDArray[Any], Any]:
    from gguf import GGMLQuantizationType, quants

    if not _quantized(tensor):
        return _keep(tensor, rng)
    return quants.quantize(_float(tensor), GGMLQuantizationType.Q4_0), GGMLQuantizationType.Q4_0


def _to_q3_levels(tensor: Any, rng: np.random.Generator) -> tuple[npt.NDArray[Any], Any]:
    from gguf import GGMLQuantizationType

    if not _quantized(tensor):
        return _keep(tensor, rng)
    if not tensor.name.startswith("blk."):
        return _to_q4_0(tensor, rng)
    return _levels_in_q4_1(_float(tensor), bits=3), GGMLQuantizationType.Q4_1


def _levels_in_q4_1(weights: Weights, *, bits: int) -> npt.NDArray[np.uint8]:
    """Round each 32-weight block to ``2**bits`` levels (fp16 scale and minimum), as Q4_1 blocks."""
    rows = weights.reshape(-1, weights.shape[-1])
    blocks = rows.reshape(-1, 32).astype(np.float32)
    low = blocks.min(axis=1).astype(np.float16)
    top = (2**bits) - 1
    scale = ((blocks.max(axis=1) - low.astype(np.float32)) / top).astype(np.float16)
    step = scale.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        levels = np.where(step > 0, np.rint((blocks - low.astype(np.float32)[:, None]) / step), 0.0)
    q = np.clip(levels, 0, top).astype(np.uint8)
    packed = q[:, :16] | (q[:, 16:] << 4)
    out = np.concatenate([scale.reshape(-1, 1).view(np.uint8), low.reshape(-1, 1).view(np.uint8), packed], axis=1)
    return out.reshape(*weights.shape[:-1], -1)


def _with_noise(tensor: Any, rng: np.random.Generator) -> tuple[npt.NDArray[Any], Any]:
    from gguf import GGMLQuantizationType, quants

    if not _is_matrix(tensor):
        return _keep(tensor, rng)
    weights = _float(tensor)
    noisy = weights + rng.standard_normal(weights.shape, dtype=np.float32) * (NOISE_FRACTION * float(weights.std()))
    return quants.quantize(noisy, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0


_TRANSFORMS: Final[dict[VariantKind, Callable[[Any, np.random.Generator], tuple[npt.NDArray[Any], Any]]]] = {
    VariantKind.Q4_0: _to_q4_0,
    VariantKind.Q3_LEVELS: _to_q3_levels,
    VariantKind.TRUNCATED: _keep,
    VariantKind.NOISE_1PCT: _with_noise,
}
