"""The thin llama.cpp driver: one model, one context of many sequences, one batch.

:class:`LlamaBatchContext` wraps llama-cpp-python's low-level API and decides
nothing: the scheduler says which ids go into which slot (llama.cpp's
``seq_id``) at which positions, and this module puts them in a
``llama_batch``, calls ``llama_decode`` and hands back views of the logit
rows.  With ``embeddings`` on, every output row also keeps the final hidden
state (``result_norm``, the input of the output matrix: what the proof digest
commits to), read with :meth:`LlamaBatchContext.hidden`.  It is copied out by
an eval callback on that one tensor, not by llama.cpp's embeddings mode: that
mode makes every token of a batch an output, which would put the output matrix
on every prompt token.  The callback changes no kernel, so the logits are
bitwise those of a context without it; it costs one Python call per graph node
(about 750 per decode for Gemma 3 270M, about 1 ms).
:meth:`LlamaBatchContext.decode_positions` decodes one feed with outputs at
many of its positions (the auditor's teacher-forced prefill), which needs a
context built with a larger ``n_outputs_max``.  It also saves and restores one
slot's KV (eviction of paused sequences) and wraps llama.cpp grammars
(``response_format``).

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
from meshcore_sdk.protocol.errors import BadRequest, ConfigError, ErrorCode, MeshError

__all__ = ["ContextConfig", "DecodeFailed", "Grammar", "Hidden", "LlamaBatchContext", "Logits"]

Logits = npt.NDArray[np.float32]
Hidden = npt.NDArray[np.float32]
Rows = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]

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
        embeddings: also keep the final hidden state (``result_norm``) of every output row.
        n_outputs_max: output rows one ``llama_decode`` may ask for, across all feeds and within
            one feed (None: ``n_slots``, one row per sequence and step).
    """

    model_path: str | Path
    n_ctx: int = 4096
    n_slots: int = 8
    n_batch: int = 512
    n_threads: int | None = None
    amx_guard: bool | None = None
    verbose: bool = False
    embeddings: bool = False
    n_outputs_max: int | None = None


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
        # One row per sequence and step unless asked otherwise: the logit buffer stays small.
        self.n_outputs_max: int = config.n_outputs_max or config.n_slots
        params.n_outputs_max = self.n_outputs_max
        params.n_outputs_max_per_seq = 0  # a sequence may have as many rows in a step as the step (llama.cpp: 1)
        self._tap = _HiddenTap(native.llama_model_n_embd(self._model)) if config.embeddings else None
        if self._tap is not None:
            params.cb_eval = self._tap.callback
        self._ctx = native.llama_init_from_model(self._model, params)
        if not self._ctx:
            native.llama_model_free(self._model)
            raise MemoryError("llama.cpp could not create the context")
        self._memory = native.llama_get_memory(self._ctx)
        self.n_vocab: int = native.llama_vocab_n_tokens(self._vocab)
        self.n_ctx: int = native.llama_n_ctx(self._ctx)
        self.n_embd: int = native.llama_model_n_embd(self._model)
        self._batch = native.llama_batch_init(config.n_batch, 0, 1)
        self._tokens = np.ctypeslib.as_array(self._batch.token, shape=(config.n_batch,))
        self._positions = np.ctypeslib.as_array(self._batch.pos, shape=(config.n_batch,))
        self._outputs = np.ctypeslib.as_array(self._batch.logits, shape=(config.n_batch,))
        np.ctypeslib.as_array(self._batch.n_seq_id, shape=(config.n_batch,))[:] = 1
        self._pieces: dict[int, bytes] = {}
        self._last_outputs: list[int | None] = []
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
        self._last_outputs = []
        for slot, ids, start, want in feeds:
            self._last_outputs.append(sum(row is not None for row in rows) if want else None)
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
        self._run(n)
        return [None if row is None else self._row(row) for row in rows]

    def hidden(self, feed: int) -> Hidden:
        """The final hidden state behind feed ``feed``'s logit row in the last :meth:`decode` (a view).

        Needs ``embeddings`` in the config; valid until the next call.
        """
        output = self._last_outputs[feed]
        if output is None or self._tap is None:
            raise ConfigError(f"feed {feed} of the last decode has no hidden row (embeddings={self.config.embeddings})")
        row: Hidden = self._tap.rows[output]
        return row

    def decode_positions(self, slot: int, ids: Sequence[int], start: int, outputs: Sequence[int]) -> Rows:
        """Decode ``ids`` into ``slot`` from position ``start`` with outputs after the ids at ``outputs``.

        ``outputs`` are indices into ``ids`` (ascending), at most ``n_outputs_max`` of
        them; ``ids`` fit one batch.  Returns copies: the logit rows ``[m, n_vocab]``
        and, with ``embeddings``, the hidden rows ``[m, n_embd]`` (else None).
        """
        size = len(ids)
        if size > self.config.n_batch or len(outputs) > self.n_outputs_max:
            raise ConfigError(f"{size} ids with {len(outputs)} outputs exceed one batch of this context")
        self._tokens[:size] = ids
        self._positions[:size] = range(start, start + size)
        self._outputs[:size] = 0
        self._outputs[list(outputs)] = 1
        for i in range(size):
            self._batch.seq_id[i][0] = slot
        self._run(size)
        self._last_outputs = []
        logits = np.stack([self._row(i) for i in outputs]) if outputs else np.empty((0, self.n_vocab), np.float32)
        if self._tap is None:
            return logits, None
        return logits, self._tap.rows.copy()

    def _run(self, n: int) -> None:
        self._batch.n_tokens = n
        if self._tap is not None:
            self._tap.reset()
        code = self._native.llama_decode(self._ctx, self._batch)
        if code != 0:
            raise DecodeFailed(f"llama_decode failed with code {code} on a batch of {n} tokens")

    def _row(self, index: int) -> Logits:
        pointer = self._native.llama_get_logits_ith(self._ctx, index)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    # --- slots --------------------------------------------------------------------------

    def clear(self, slot: int) -> None:
        """Empty ``slot``."""
        self._native.llama_memory_seq_rm(self._memory, slot, -1, -1)

    def reset(self) -> None:
        """Empty every slot and send the next tokens to the first cache cells again (``llama_memory_clear``).

        Where a token's KV lands changes the bits of later rows (Tier A replays
        need it reproducible); clearing every slot leaves llama.cpp's search
        position where it was, this does not.
        """
        self._native.llama_memory_clear(self._memory, True)

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


class _HiddenTap:
    """A ggml eval callback that copies the ``result_norm`` tensor (the final hidden rows) of each graph run.

    The scheduler asks the callback about every node (``ask``); it wants only
    ``result_norm`` and, once that node is computed, copies its rows out.  A
    decode split into several micro-batches runs the graph once per micro-batch:
    the rows are appended in order.
    """

    NAME: ClassVar[bytes] = b"result_norm"

    def __init__(self, n_embd: int) -> None:
        from llama_cpp._ggml import libggml
        from llama_cpp.llama_cpp import ggml_backend_sched_eval_callback

        self._ggml = libggml
        libggml.ggml_get_name.restype = ctypes.c_char_p
        libggml.ggml_get_name.argtypes = [ctypes.c_void_p]
        libggml.ggml_nelements.restype = ctypes.c_int64
        libggml.ggml_nelements.argtypes = [ctypes.c_void_p]
        libggml.ggml_backend_tensor_get.restype = None
        libggml.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
        self._n_embd = n_embd
        self._chunks: list[npt.NDArray[np.float32]] = []
        self._rows: npt.NDArray[np.float32] | None = None
        self.callback = ggml_backend_sched_eval_callback(self._observe)  # kept alive as long as the context

    def reset(self) -> None:
        """Forget the rows of the last decode."""
        self._chunks.clear()
        self._rows = None

    @property
    def rows(self) -> npt.NDArray[np.float32]:
        """The hidden rows of the last decode's outputs, in output order: ``[n_outputs, n_embd]``."""
        if self._rows is None:
            chunks = self._chunks
            self._rows = (
                chunks[0] if len(chunks) == 1 else np.concatenate(chunks or [np.empty((0, self._n_embd), np.float32)])
            )
        return self._rows

    def _observe(self, tensor: int | None, ask: bool, _user_data: int | None) -> bool:
        if self._ggml.ggml_get_name(tensor) != self.NAME:
            return False
        if ask:
            return True
        count = int(self._ggml.ggml_nelements(tensor))
        rows = np.empty((count // self._n_embd, self._n_embd), dtype=np.float32)
        self._ggml.ggml_backend_tensor_get(tensor, rows.ctypes.data, 0, rows.nbytes)
        self._chunks.append(rows)
        return True


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
