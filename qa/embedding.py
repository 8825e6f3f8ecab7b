"""Sentence-transformers embeddings, L2-normalised so inner product is cosine similarity."""

from __future__ import annotations

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
