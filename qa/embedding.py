"""Sentence-transformers embeddings, L2-normalised so inner product is cosine similarity."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.loading import (
    EMBED_MODEL_ENV,
    check_backend,
    choose_backend,
    embed_model_name,
    model_load_error,
    quiet_hf,
    resolve_embed_model,
)
from qa.onnx_models import pad

# Texts tokenized at once when embedding many: bounds the memory of indexing a big folder, while
# each window is still long enough to sort into batches of similar length.
TOKENIZE_WINDOW = 2048

if TYPE_CHECKING:
    import numpy as np

    from qa.settings import Settings


class Embedder:
    """Loads the model on first use (not at construction), once per process.

    A plain Transformer -> mean Pooling (-> Normalize) model (all-MiniLM-L6-v2 is one) runs on
    ONNX Runtime or torch (`backend`, chosen as the reader's is); anything else goes through
    sentence-transformers itself. All ways give the same vectors (cosine > 0.9999; tested).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        batch_size: int = 32,
        device: str | None = None,
        backend: str = "auto",
        cache: Path | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.name = embed_model_name(model)  # recorded in the index manifest
        self.path = resolve_embed_model(model)
        self.batch_size = batch_size
        self._device = device
        self._wanted_backend = check_backend(backend)
        self._cache = cache
        self._log = log
        self._model: Any = None  # sentence-transformers, for stacks that are not plain mean pooling
        self._plain: tuple[Any, Any] | None = None  # (tokenizer, torch model or ONNX Runtime session)
        self.backend = ""

    @classmethod
    def from_settings(cls, settings: Settings, log: Callable[[str], None] | None = None) -> Embedder:
        """The embedder the settings name, run the way they say."""
        return cls(settings.embed_model, backend=settings.backend, cache=settings.cache_dir, log=log)

    def warm_up(self) -> None:
        """Load what `encode` uses (for a plain stack, the same as `encode_queries`)."""
        if self._plain_stack is not None:
            self.warm_up_queries()
            return
        if self._model is not None:
            return
        from sentence_transformers import SentenceTransformer

        quiet_hf()
        try:
            self._model = SentenceTransformer(self.path, device=self._device or "cpu")
        except Exception as exc:  # sentence-transformers raises many types for missing/corrupt models
            raise model_load_error("embedding model", self.name, exc, "--embed-model", EMBED_MODEL_ENV) from exc
        self.backend = "sentence-transformers"

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Question vectors; the same as `encode` (tested)."""
        return self.encode(texts)

    def warm_up_queries(self) -> None:
        """Load what `encode_queries` uses, once (cheap when already loaded: called per question)."""
        if self._plain_stack is None:
            self.warm_up()
        elif self._plain is None:
            backend = choose_backend(self._wanted_backend, "auto", self._device, Path(self.path).is_dir())
            self._plain = self._load_onnx() if backend == "onnx" else None
            if self._plain is None:  # torch chosen, or the export failed under auto
                model, tokenizer = self._load_torch()
                self._plain, backend = (tokenizer, model), "torch"
            self.backend = backend

    @cached_property
    def _plain_stack(self) -> int | None:
        # Read once: the model folder's four JSON files were read again on every question.
        return _plain_mean_pooling(self.path)

    def _load_torch(self) -> tuple[Any, Any]:
        """The encoder and its tokenizer, from transformers."""
        import torch
        from transformers import AutoModel, AutoTokenizer

        quiet_hf()
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.path)
            model = AutoModel.from_pretrained(self.path, dtype=torch.float32).eval()
        except Exception as exc:  # transformers raises many types for a missing/corrupt model
            raise model_load_error("embedding model", self.name, exc, "--embed-model", EMBED_MODEL_ENV) from exc
        return model.to(self._device or "cpu"), tokenizer

    def _load_onnx(self) -> tuple[Any, Any] | None:
        from qa import onnx_models

        required = self._wanted_backend == "onnx"
        exported = onnx_models.export_or_fallback(
            self.path, "encoder", self._cache, self._load_torch, self._log, required
        )
        if exported is None:
            return None
        tokenizer = onnx_models.load_tokenizer(exported)
        assert self._plain_stack is not None
        tokenizer.enable_truncation(self._plain_stack)  # longest_first, as sentence-transformers asks for
        tokenizer.no_padding()
        return tokenizer, (onnx_models.session(exported.graph), exported.inputs, exported.pad_id)

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text, in the order given."""
        import numpy as np

        if self._plain_stack is None:
            self.warm_up()
            vectors = self._model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=progress,
            )
            return np.ascontiguousarray(vectors, dtype=np.float32)
        self.warm_up_queries()
        return self._mean_pooled(texts, progress)

    def _mean_pooled(self, texts: list[str], progress: bool) -> np.ndarray:
        """Mean of the token vectors over the attention mask, normalised: what the stack computes.

        Texts are stripped as sentence-transformers strips them, and run in batches of similar
        token length (longest first, as sentence-transformers orders them), so padding costs little.
        They are tokenized a window at a time: the token lists of a whole 480-article folder held
        at once took more than a gigabyte, which grew with the folder (the archive benchmark).
        """
        import numpy as np
        from tqdm import tqdm

        assert self._plain is not None
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        stripped = [t.strip() for t in texts]
        starts = range(0, len(texts), TOKENIZE_WINDOW)
        batches = sum(-(-min(TOKENIZE_WINDOW, len(texts) - w) // self.batch_size) for w in starts)
        out: np.ndarray | None = None
        with tqdm(total=batches, desc="embedding", unit="batch", disable=not progress, file=sys.stderr) as bar:
            for w in starts:
                rows = self._token_rows(stripped[w : w + TOKENIZE_WINDOW])
                order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
                for b in range(0, len(order), self.batch_size):
                    idx = order[b : b + self.batch_size]
                    vectors = self._pooled_batch([rows[i] for i in idx])
                    if out is None:
                        out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
                    out[[w + i for i in idx]] = vectors
                    bar.update()
        assert out is not None
        return out

    def _token_rows(self, texts: list[str]) -> list[tuple[list[int], list[int], list[int]]]:
        """(ids, type ids, attention mask) per text, unpadded."""
        tokenizer, _ = self._plain  # type: ignore[misc]
        if self.backend == "onnx":
            return [(e.ids, e.type_ids, e.attention_mask) for e in tokenizer.encode_batch(texts)]
        assert self._plain_stack is not None
        enc = tokenizer(texts, truncation=True, max_length=self._plain_stack)
        types = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
        return list(zip(enc["input_ids"], types, enc["attention_mask"], strict=True))

    def _pooled_batch(self, rows: list[tuple[list[int], list[int], list[int]]]) -> np.ndarray:
        import numpy as np

        tokenizer, model = self._plain  # type: ignore[misc]
        if self.backend == "onnx":
            session, inputs, pad_id = model
        else:
            inputs, pad_id = ("input_ids", "attention_mask", "token_type_ids"), tokenizer.pad_token_id or 0
        batch = {
            "input_ids": pad([r[0] for r in rows], pad_id),
            "token_type_ids": pad([r[1] for r in rows], 0),
            "attention_mask": pad([r[2] for r in rows], 0),
        }
        if self.backend == "onnx":
            (hidden,) = session.run(None, {n: batch[n] for n in inputs})
        else:
            hidden = self._torch_hidden(model, batch)
        mask = batch["attention_mask"][:, :, None].astype(np.float32)
        pooled = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    def _torch_hidden(self, model: Any, batch: dict[str, np.ndarray]) -> np.ndarray:
        import inspect

        import torch

        accepted = inspect.signature(model.forward).parameters
        wanted = {k: torch.from_numpy(v).to(self._device or "cpu") for k, v in batch.items() if k in accepted}
        with torch.inference_mode():
            return model(**wanted).last_hidden_state.float().cpu().numpy()


def _plain_mean_pooling(path: str) -> int | None:
    """max_seq_length when the sentence-transformers folder is exactly Transformer -> mean Pooling
    (-> Normalize) with no prompts, else None (then sentence-transformers itself is used)."""
    import json
    from pathlib import Path

    root = Path(path)
    try:
        modules = json.loads((root / "modules.json").read_text(encoding="utf-8"))
        types = [m["type"].rsplit(".", 1)[-1] for m in modules]
        if types not in (["Transformer", "Pooling", "Normalize"], ["Transformer", "Pooling"]) or modules[0]["path"]:
            return None
        pooling = json.loads((root / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
        modes = {k: v for k, v in pooling.items() if k.startswith("pooling_mode_")}
        if modes.get("pooling_mode_mean_tokens") is not True or any(
            v for k, v in modes.items() if k != "pooling_mode_mean_tokens"
        ):
            return None
        st_config = root / "config_sentence_transformers.json"
        if st_config.is_file() and json.loads(st_config.read_text(encoding="utf-8")).get("prompts"):
            return None
        bert = json.loads((root / "sentence_bert_config.json").read_text(encoding="utf-8"))
        if bert.get("do_lower_case"):
            return None
        return int(bert["max_seq_length"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
