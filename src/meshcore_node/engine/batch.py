"""The thin llama.cpp driver: one model, one context of many sequences, one batch.

:class:`LlamaBatchContext` wraps llama-cpp-python's low-level API and decides
nothing: the scheduler says which ids go into which slot (llama.cpp's
``seq_id``) at which positions, and this module puts them in a
``llama_batch``, calls ``llama_decode`` and hands back views of the logit
rows.  It also saves and restores one slot's KV (eviction of paused
sequences) and wraps llama.cpp grammars (``response_format``).

The context is built with a unified KV cache (every slot draws on all
``n_ctx`` cells) and a full-size sliding-window cache (``swa_full``), so that
a slot's KV can be cut back to any position, which a ``resume`` needs.  The
model is loaded with ``use_extra_bufts = not needs_amx_guard()`` (see
:mod:`meshcore_node.engine.guard`).

Not thread-safe: one thread drives it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from meshcore_node.engine.guard import needs_amx_guard
from meshcore_sdk.protocol.errors import BadRequest, ErrorCode, MeshError

__all__ = ["ContextConfig", "DecodeFailed", "Grammar", "LlamaBatchContext"]

Logits = npt.NDArray[np.float32]

_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


class DecodeFailed(MeshError):
    """llama.cpp refused a batch (no room in the KV cache, or an internal error)."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL


@dataclass(frozen=True, slots=True)
class ContextConfig:
    """How to build the model and its context.

    Attributes:
        model_path: the GGUF file.
        n_ctx: KV cache cells shared by every sequence.
        n_slots: sequences the context holds at once (llama.cpp's ``n_seq_max``).
        n_batch: tokens per ``llama_decode`` at most.
        n_threads: threads for llama.cpp (None: its default).
        amx_guard: force the AMX guard on or off; None decides from the CPU.
        verbose: let llama.cpp log to stderr.
    """

    model_path: str | Path
    n_ctx: int = 4096
    n_slots: int = 8
    n_batch: int = 512
    n_threads: int | None = None
    amx_guard: bool | None = None
    verbose: bool = False


class LlamaBatchContext:
    """One model and one multi-sequence context; see the module docstring."""

    def __init__(self, config: ContextConfig) -> None:
        from llama_cpp import _logger
        from llama_cpp import llama_cpp as native

        _logger.set_verbose(config.verbose)
        self._native = native
        self.config = config
        native.llama_backend_init()
        model_params = native.llama_model_default_params()
        model_params.use_extra_bufts = not needs_amx_guard(config.amx_guard)
        self._model = native.llama_model_load_from_file(str(config.model_path).encode(), model_params)
        if not self._model:
            raise FileNotFoundError(f"llama.cpp could not load {config.model_path}")
        self._vocab = native.llama_model_get_vocab(self._model)
        params = native.llama_context_default_params()
        params.n_ctx = config.n_ctx
        params.n_batch = params.n_ubatch = config.n_batch
        params.n_seq_max = config.n_slots
        if config.n_threads is not None:
            params.n_threads = params.n_threads_batch = config.n_threads
        params.kv_unified = True
        params.swa_full = True
        params.no_perf = True
        params.n_outputs_max = config.n_slots  # one row per sequence and step: the logit buffer stays small
        self._ctx = native.llama_init_from_model(self._model, params)
        if not self._ctx:
            native.llama_model_free(self._model)
            raise MemoryError("llama.cpp could not create the context")
        self._memory = native.llama_get_memory(self._ctx)
        self.n_vocab: int = native.llama_vocab_n_tokens(self._vocab)
        self.n_ctx: int = native.llama_n_ctx(self._ctx)
        self._batch = native.llama_batch_init(config.n_batch, 0, 1)
        self._tokens = np.ctypeslib.as_array(self._batch.token, shape=(config.n_batch,))
        self._positions = np.ctypeslib.as_array(self._batch.pos, shape=(config.n_batch,))
        self._outputs = np.ctypeslib.as_array(self._batch.logits, shape=(config.n_batch,))
        np.ctypeslib.as_array(self._batch.n_seq_id, shape=(config.n_batch,))[:] = 1
        self._pieces: dict[int, bytes] = {}
        self.metadata = self._read_metadata()

    # --- vocabulary ---------------------------------------------------------------------

    def tokenize(self, text: bytes, *, add_bos: bool, special: bool = True) -> list[int]:
        """The ids of ``text``."""
        size = len(text) + 8
        buffer = (ctypes.c_int32 * size)()
        n = self._native.llama_tokenize(self._vocab, text, len(text), buffer, size, add_bos, special)
        if n < 0:
            size = -n
            buffer = (ctypes.c_int32 * size)()
            n = self._native.llama_tokenize(self._vocab, text, len(text), buffer, size, add_bos, special)
        return list(buffer[:n])

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes of one token (special tokens render as nothing unless ``special``)."""
        cache_key = token if not special else ~token
        cached = self._pieces.get(cache_key)
        if cached is None:
            buffer = ctypes.create_string_buffer(64)
            n = self._native.llama_token_to_piece(self._vocab, token, buffer, 64, 0, special)
            if n < 0:
                buffer = ctypes.create_string_buffer(-n)
                n = self._native.llama_token_to_piece(self._vocab, token, buffer, -n, 0, special)
            cached = self._pieces[cache_key] = buffer.raw[:n]
        return cached

    def is_eog(self, token: int) -> bool:
        """Whether ``token`` ends a generation (EOS, end of turn)."""
        return bool(self._native.llama_vocab_is_eog(self._vocab, token))

    @property
    def bos(self) -> int:
        """The beginning-of-sequence id."""
        return int(self._native.llama_vocab_bos(self._vocab))

    @property
    def eos(self) -> int:
        """The end-of-sequence id."""
        return int(self._native.llama_vocab_eos(self._vocab))

    # --- decoding -----------------------------------------------------------------------

    def decode(self, feeds: Sequence[tuple[int, Sequence[int], int, bool]]) -> list[Logits | None]:
        """Decode one batch: per feed ``(slot, ids, first position, want logits)``.

        Returns, per feed, a view of the logit row after its last id (or None when
        not wanted).  The views are valid until the next call.
        """
        batch = self._batch
        n = 0
        rows: list[int | None] = []
        for slot, ids, start, want in feeds:
            size = len(ids)
            self._tokens[n : n + size] = ids
            self._positions[n : n + size] = range(start, start + size)
            self._outputs[n : n + size] = 0
            for i in range(n, n + size):
                batch.seq_id[i][0] = slot
            n += size
            if want:
                self._outputs[n - 1] = 1
            rows.append(n - 1 if want else None)
        batch.n_tokens = n
        code = self._native.llama_decode(self._ctx, batch)
        if code != 0:
            raise DecodeFailed(f"llama_decode failed with code {code} on a batch of {n} tokens")
        return [None if row is None else self._row(row) for row in rows]

    def _row(self, index: int) -> Logits:
        pointer = self._native.llama_get_logits_ith(self._ctx, index)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    # --- slots --------------------------------------------------------------------------

    def clear(self, slot: int) -> None:
        """Empty ``slot``."""
        self._native.llama_memory_seq_rm(self._memory, slot, -1, -1)

    def trim(self, slot: int, keep: int) -> None:
        """Drop the positions of ``slot`` from ``keep`` on."""
        if not self._native.llama_memory_seq_rm(self._memory, slot, keep, -1):
            raise DecodeFailed(f"llama.cpp could not cut slot {slot} back to {keep} positions")

    def state_size(self, slot: int) -> int:
        """Bytes that :meth:`save` would return for ``slot``."""
        return int(self._native.llama_state_seq_get_size(self._ctx, slot))

    def save(self, slot: int) -> bytes:
        """The KV of ``slot`` as bytes (``llama_state_seq_get_data``)."""
        size = self.state_size(slot)
        buffer = (ctypes.c_uint8 * size)()
        written = self._native.llama_state_seq_get_data(self._ctx, buffer, size, slot)
        return bytes(memoryview(buffer)[:written])

    def restore(self, slot: int, data: bytes) -> None:
        """Load KV saved by :meth:`save` into the (empty) ``slot``."""
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if self._native.llama_state_seq_set_data(self._ctx, buffer, len(data), slot) == 0:
            raise DecodeFailed(f"llama.cpp could not restore {len(data)} bytes of KV into slot {slot}")

    # --- the rest -----------------------------------------------------------------------

    def grammar(self, gbnf: str) -> Grammar:
        """A grammar over this model's vocabulary (raises BadRequest when llama.cpp cannot parse it)."""
        return Grammar(self._native, self._vocab, gbnf)

    def close(self) -> None:
        """Free the batch, the context and the model."""
        if self._ctx:
            self._native.llama_batch_free(self._batch)
            self._native.llama_free(self._ctx)
            self._native.llama_model_free(self._model)
            self._ctx = None

    def _read_metadata(self) -> dict[str, str]:
        native = self._native
        metadata: dict[str, str] = {}
        for i in range(native.llama_model_meta_count(self._model)):
            key = _read_string(lambda buf, size, i=i: native.llama_model_meta_key_by_index(self._model, i, buf, size))
            value = _read_string(
                lambda buf, size, i=i: native.llama_model_meta_val_str_by_index(self._model, i, buf, size)
            )
            metadata[key] = value
        return metadata


def _read_string(read: Any) -> str:
    size = 256
    while True:
        buffer = ctypes.create_string_buffer(size)
        n = int(read(buffer, size))
        if n < size:
            return buffer.raw[: max(n, 0)].decode("utf-8", "replace")
        size = n + 1


class Grammar:
    """A llama.cpp grammar sampler used as a mask: which ids may come next."""

    def __init__(self, native: Any, vocab: Any, gbnf: str) -> None:
        self._native = native
        self._sampler = native.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
        if not self._sampler:
            raise BadRequest("llama.cpp could not compile the grammar of this response_format")

    def allows(self, token: int) -> bool:
        """Whether ``token`` may come next."""
        data = np.zeros(1, dtype=_TOKEN_DATA)
        data["id"] = token
        return bool(np.isfinite(self._apply(data)["logit"][0]))

    def mask(self, row: Logits) -> Logits:
        """A copy of ``row`` with -inf where the grammar forbids the id."""
        data = np.empty(row.size, dtype=_TOKEN_DATA)
        data["id"] = np.arange(row.size, dtype=np.int32)
        data["logit"] = row
        data["p"] = 0.0
        masked = self._apply(data)
        out = np.full(row.size, -np.inf, dtype=np.float32)
        out[masked["id"]] = masked["logit"]
        return out

    def accept(self, token: int) -> None:
        """Advance the grammar past ``token``."""
        self._native.llama_sampler_accept(self._sampler, token)

    def close(self) -> None:
        """Free the sampler."""
        if self._sampler:
            self._native.llama_sampler_free(self._sampler)
            self._sampler = None

    def _apply(self, data: npt.NDArray[Any]) -> npt.NDArray[Any]:
        native = self._native
        array = native.llama_token_data_array(
            data=data.ctypes.data_as(native.llama_token_data_p), size=data.size, selected=-1, sorted=False
        )
        native.llama_sampler_apply(self._sampler, ctypes.byref(array))
        return data[: array.size]
