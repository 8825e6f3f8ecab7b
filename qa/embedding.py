"""Sentence-transformers embeddings, L2-normalised so inner product is cosine similarity."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from qa.models import EMBED_MODEL_ENV, embed_model_name, model_load_error, quiet_hf, resolve_embed_model

if TYPE_CHECKING:
    import numpy as np


class Embedder:
    """Loads the model on first use (not at construction), once per process."""

    def __init__(self, model: str | None = None, *, batch_size: int = 32, device: str | None = None) -> None:
        self.name = embed_model_name(model)  # recorded in the index manifest
        self.path = resolve_embed_model(model)
        self.batch_size = batch_size
        self._device = device
        self._model: Any = None
        self._plain: tuple[Any, Any] | None = None

    def warm_up(self) -> None:
        if self._model is not None:
            return
        from sentence_transformers import SentenceTransformer

        quiet_hf()
        try:
            self._model = SentenceTransformer(self.path, device=self._device or "cpu")
        except Exception as exc:  # sentence-transformers raises many types for missing/corrupt models
            raise model_load_error("embedding model", self.name, exc, "--embed-model", EMBED_MODEL_ENV) from exc

    @property
    def dimension(self) -> int:
        self.warm_up()
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        return int(get_dim())

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Question vectors, identical to `encode` (tested), without importing sentence-transformers
        when the model is a plain Transformer -> mean Pooling (-> Normalize) stack.

        Importing sentence-transformers costs ~2.6 s (it pulls in scikit-learn, SciPy, pandas),
        more than half of a cold `qa ask`; the query path needs only the encoder and a mean.
        """
        if self._model is None and (plain := self._plain_stack) is not None:
            return self._mean_pooled(texts, plain)
        return self.encode(texts)

    @cached_property
    def _plain_stack(self) -> int | None:
        # Read once: the model folder's four JSON files were read again on every question.
        return _plain_mean_pooling(self.path)

    def warm_up_queries(self) -> None:
        """Load what `encode_queries` uses, once (cheap when already loaded: called per question)."""
        if self._model is None and self._plain is None:
            self.encode_queries(["warm up"])

    def _mean_pooled(self, texts: list[str], max_seq_length: int) -> np.ndarray:
        import numpy as np
        import torch
        from transformers import AutoModel, AutoTokenizer

        if self._plain is None:
            quiet_hf()
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.path)
                model = AutoModel.from_pretrained(self.path, dtype=torch.float32).eval()
            except Exception as exc:  # transformers raises many types for a missing/corrupt model
                raise model_load_error("embedding model", self.name, exc, "--embed-model", EMBED_MODEL_ENV) from exc
            self._plain = (tokenizer, model)
        tokenizer, model = self._plain
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_seq_length, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return np.ascontiguousarray(pooled.numpy(), dtype=np.float32)

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        import numpy as np

        self.warm_up()
        vectors = self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


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
