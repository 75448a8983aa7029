"""BatDetect2 (Mac Aodha et al. 2022): Net2DFast, a detector and classifier of UK bat echolocation calls.

Numbers from ``batdetect2==1.3.1`` (``detector/parameters.py``, ``utils/audio_utils.py``,
``utils/detector_utils.py``, ``detector/post_process.py``) and its checkpoint ``Net2DFast_UK_same.pth.tar``
(CC BY-NC 4.0, read from the installed wheel with ``torch.load(weights_only=True)``):

Front end, per chunk (the official API cuts a file into independent 3-s chunks, the last one shorter):
    audio at 256 kHz (other rates resampled with librosa ``polyphase``, unscaled, as BatDetect2 does)
    -> zero-padded so the network input width is a multiple of 32
    -> |STFT| (n_fft 512 = 2 ms, hop 128 = 75 % overlap, periodic hann, no centring), DC bin dropped
    -> bins 10.5-120 kHz (220 rows), highest frequency first
    -> PCEN (librosa defaults, sr 25.6 kHz) of the magnitude x 2^31 -> minus each row's mean, clipped at 0
    -> bilinear resize to 128 rows x half the frames.
Network: a U-Net whose encoder convolutions see a frequency coordinate channel, a time self-attention
bottleneck, and 1x1 heads giving 17 species + background (softmax), detection = 1 - background, and box
size (width in frames, height in rows) at every pixel of the (128, W) output.
Post-processing: 9x9 max-pool non-maximum suppression, the top 200 peaks per second of output, those above the
detection threshold (0.01, the API default) become calls; each call has start/end time, low/high frequency, 17
species probabilities, its detection probability and the 32-d feature vector at its peak ("cnn_features").
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from rl_core.datasets_bundled import package_dir
from rl_core.errors import AudioError, CheckpointMismatchError, ConfigError, MissingDependencyError
from rl_core.models.base import ModelBase
from rl_core.registry import register_model_class

log = logging.getLogger(__name__)

WEIGHTS_FILE = "Net2DFast_UK_same.pth.tar"
SAMPLE_RATE = 256_000
CHUNK_SECONDS = 3.0  # batdetect2.api's chunk_size
N_FFT = 512  # 2 ms at 256 kHz
HOP = 128  # 75 % overlap
MIN_FREQ_HZ = 10_000
MAX_FREQ_HZ = 120_000
INPUT_HEIGHT = 128  # rows of the resized spectrogram (256 * resize factor 0.5)
RESIZE_FACTOR = 0.5
WIDTH_MULTIPLE = 32  # the encoder halves the input five times over
PCEN_SCALE = 2.0**31
PCEN_SR = SAMPLE_RATE / 10  # BatDetect2 passes sr/10 with librosa's default hop of 512
DETECTION_THRESHOLD = 0.01
NMS_KERNEL = 9
TOP_K_PER_SECOND = 200
FEATURE_DIM = 32  # per-call feature vector
EMBEDDING_DIM = 256  # per-window embedding: the attention bottleneck, mean over time
#: below this rate the band where most UK bats call (about 20-110 kHz) is not in the recording
MIN_RECORDING_RATE = 96_000

#: the checkpoint's class order (``params["class_names"]``) with English names
SPECIES: tuple[tuple[str, str], ...] = (
    ("Barbastellus barbastellus", "Western barbastelle"),
    ("Eptesicus serotinus", "Serotine"),
    ("Myotis alcathoe", "Alcathoe bat"),
    ("Myotis bechsteinii", "Bechstein's bat"),
    ("Myotis brandtii", "Brandt's bat"),
    ("Myotis daubentonii", "Daubenton's bat"),
    ("Myotis mystacinus", "Whiskered bat"),
    ("Myotis nattereri", "Natterer's bat"),
    ("Nyctalus leisleri", "Leisler's bat"),
    ("Nyctalus noctula", "Common noctule"),
    ("Pipistrellus nathusii", "Nathusius' pipistrelle"),
    ("Pipistrellus pipistrellus", "Common pipistrelle"),
    ("Pipistrellus pygmaeus", "Soprano pipistrelle"),
    ("Plecotus auritus", "Brown long-eared bat"),
    ("Plecotus austriacus", "Grey long-eared bat"),
    ("Rhinolophus ferrumequinum", "Greater horseshoe bat"),
    ("Rhinolophus hipposideros", "Lesser horseshoe bat"),
)
NUM_CLASSES = len(SPECIES)
#: leading columns of a calls table; one probability column per species (scientific name) follows
CALL_COLUMNS = ["file", "start_s", "end_s", "low_freq_hz", "high_freq_hz", "detection_prob",
                "scientific_name", "common_name", "class_prob"]


class RecordingRateError(AudioError):
    """The recording's sample rate cannot hold bat echolocation calls."""


def weights_path() -> Path | None:
    """``batdetect2/models/Net2DFast_UK_same.pth.tar`` inside the installed wheel, or None."""
    root = package_dir("batdetect2")
    path = root / "models" / WEIGHTS_FILE if root else None
    return path if path is not None and path.is_file() else None


# ----------------------------------------------------------------------------------------------- front end
def padded_length(samples: int) -> int:
    """Samples after BatDetect2's zero padding: the resized width becomes a multiple of 32 (at least 64)."""
    frames = (samples - (N_FFT - HOP)) // HOP
    width = int(frames * RESIZE_FACTOR)
    target = max(int(math.ceil(width / WIDTH_MULTIPLE)) * WIDTH_MULTIPLE, 2 * WIDTH_MULTIPLE)
    if width == target:
        return samples
    return int(target / RESIZE_FACTOR) * HOP + (N_FFT - HOP)


def frame_to_seconds(x: torch.Tensor | float) -> torch.Tensor | float:
    """Output column (at half the STFT frame rate) -> seconds, as BatDetect2 converts it: frame x hop + overlap."""
    return (x / RESIZE_FACTOR * HOP + (N_FFT - HOP)) / SAMPLE_RATE


def spectrogram(audio: torch.Tensor) -> torch.Tensor:
    """(B, samples) at 256 kHz -> the network input (B, 1, 128, W); every clip of the batch has the same length."""
    import librosa  # PCEN: librosa's implementation is the reference the model was trained with

    audio = F.pad(audio, (0, padded_length(audio.shape[-1]) - audio.shape[-1]))
    window = torch.hann_window(N_FFT, periodic=True, device=audio.device)
    magnitude = torch.stft(audio, N_FFT, HOP, window=window, center=False, return_complex=True).abs()
    low_bin = round(MIN_FREQ_HZ * N_FFT / SAMPLE_RATE) + 1  # 21: the official crop ends one bin above 10 kHz
    high_bin = round(MAX_FREQ_HZ * N_FFT / SAMPLE_RATE)  # 240
    band = magnitude[:, low_bin:high_bin + 1].flip(1)  # highest frequency in row 0
    pcen = librosa.pcen(band.cpu().numpy() * np.float32(PCEN_SCALE), sr=PCEN_SR, axis=-1).astype(np.float32)
    spec = torch.from_numpy(pcen).to(audio.device)
    spec = (spec - spec.mean(dim=-1, keepdim=True)).clamp_(min=0)  # remove each band's stationary noise
    size = (INPUT_HEIGHT, int(spec.shape[-1] * RESIZE_FACTOR))
    return F.interpolate(spec.unsqueeze(1), size=size, mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------------------------- network
class _CoordConv(nn.Module):
    """A 3x3 conv that also sees a -1..1 frequency coordinate channel (CoordConv), and its batch norm."""

    def __init__(self, in_channels: int, out_channels: int, height: int) -> None:
        super().__init__()
        self.register_buffer("coords", torch.linspace(-1, 1, height)[None, None, :, None])
        self.conv = nn.Conv2d(in_channels + 1, out_channels, kernel_size=3, padding=1)
        self.conv_bn = nn.BatchNorm2d(out_channels)

    def conv_with_coords(self, x: torch.Tensor) -> torch.Tensor:
        coords = self.coords.expand(x.shape[0], 1, -1, x.shape[-1])
        return self.conv(torch.cat([x, coords], dim=1))


class CoordConvDown(_CoordConv):
    """conv 3x3 on (features + frequency coordinate) -> 2x2 max-pool -> BN -> ReLU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv_bn(F.max_pool2d(self.conv_with_coords(x), 2, 2)), inplace=True)


class CoordConvUp(_CoordConv):
    """2x bilinear upsampling -> conv 3x3 on (features + frequency coordinate) -> BN -> ReLU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(x.shape[-2] * 2, x.shape[-1] * 2), mode="bilinear", align_corners=False)
        return F.relu(self.conv_bn(self.conv_with_coords(x)), inplace=True)


class TimeSelfAttention(nn.Module):
    """Self-attention over the time steps of a (B, C, 1, T) map, without position encoding.

    As trained: scores are key . query / C, and the softmax runs over the *key* axis, so each output time step
    mixes the values with weights that sum to one over the keys.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.key_fun = nn.Linear(channels, channels)
        self.val_fun = nn.Linear(channels, channels)
        self.que_fun = nn.Linear(channels, channels)
        self.pro_fun = nn.Linear(channels, channels)
        self.scale = 1.0 / channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.squeeze(2).transpose(1, 2)  # (B, T, C)
        keys, queries, values = self.key_fun(tokens), self.que_fun(tokens), self.val_fun(tokens)
        weights = torch.softmax(keys @ queries.transpose(1, 2) * self.scale, dim=1)  # (B, T_key, T_query)
        mixed = weights.transpose(1, 2) @ values  # (B, T_query, C)
        return self.pro_fun(mixed).transpose(1, 2).unsqueeze(2)


class NetOutputs(NamedTuple):
    detection: torch.Tensor  # (B, 1, H, W): 1 - background probability
    size: torch.Tensor  # (B, 2, H, W): box width (output columns) and height (rows)
    class_probs: torch.Tensor  # (B, 17, H, W): species probabilities (background dropped)
    features: torch.Tensor  # (B, 32, H, W): the map under the heads
    bottleneck: torch.Tensor  # (B, 256, 1, W / 16): after attention


@dataclass
class CallDetections:
    """Calls found in a batch of windows: a table (``CALL_COLUMNS`` + one probability column per species),
    and the (N, 32) feature vector of each call in the table's order."""

    table: pd.DataFrame
    features: np.ndarray


@register_model_class
class BatDetect2(ModelBase):
    """BatDetect2 Net2DFast (UK, 17 species) as an rl_core model.

    ``forward`` gives per-window species scores (B, 17): each species' best probability over the calls found in
    the window (0 without calls); ``embed_and_score`` gives those and the window embedding (B, 256);
    ``detect_calls`` gives the calls themselves.
    """

    name = "batdetect2"
    default_sample_rate = SAMPLE_RATE
    default_window_seconds = CHUNK_SECONDS
    output_activation = "softmax"
    min_input_samples = N_FFT
    preferred_batch_size = 1  # batching windows is slower on a small CPU (cache-bound convolutions)
    #: recordings are brought to 256 kHz as BatDetect2 loads them (librosa polyphase, unscaled)
    default_resampling = "polyphase"
    detects_calls = True
    bundled_weights_package = "batdetect2"

    def __init__(self, detection_threshold: float = DETECTION_THRESHOLD, weights: str | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if self.num_classes not in (None, NUM_CLASSES):
            raise ConfigError(
                f"BatDetect2's classifier is fixed at {NUM_CLASSES} UK bat species; to learn {self.num_classes} "
                "classes, train a probe on its call features or window embeddings"
            )
        self.num_classes = NUM_CLASSES
        if self.sample_rate != SAMPLE_RATE:
            raise ConfigError(f"BatDetect2 runs at {SAMPLE_RATE} Hz, not {self.sample_rate} Hz")
        if not 0.0 <= detection_threshold < 1.0:
            raise ConfigError(f"detection_threshold must be in [0, 1), got {detection_threshold}")
        pretrained = self.pretrained
        self.detection_threshold = float(detection_threshold)
        filters = 128
        self.conv_dn_0 = CoordConvDown(1, filters // 4, INPUT_HEIGHT)
        self.conv_dn_1 = CoordConvDown(filters // 4, filters // 2, INPUT_HEIGHT // 2)
        self.conv_dn_2 = CoordConvDown(filters // 2, filters, INPUT_HEIGHT // 4)
        self.conv_dn_3 = nn.Conv2d(filters, filters * 2, 3, padding=1)
        self.conv_dn_3_bn = nn.BatchNorm2d(filters * 2)
        # the 16 remaining rows collapse into one: a (16, 1) convolution
        self.conv_1d = nn.Conv2d(filters * 2, filters * 2, (INPUT_HEIGHT // 8, 1))
        self.conv_1d_bn = nn.BatchNorm2d(filters * 2)
        self.att = TimeSelfAttention(filters * 2)
        self.conv_up_2 = CoordConvUp(filters * 2, filters // 2, INPUT_HEIGHT // 4)
        self.conv_up_3 = CoordConvUp(filters // 2, filters // 4, INPUT_HEIGHT // 2)
        self.conv_up_4 = CoordConvUp(filters // 4, filters // 4, INPUT_HEIGHT)
        self.conv_op = nn.Conv2d(filters // 4, filters // 4, 3, padding=1)
        self.conv_op_bn = nn.BatchNorm2d(filters // 4)
        self.conv_size_op = nn.Conv2d(filters // 4, 2, 1)
        self.conv_classes_op = nn.Conv2d(filters // 4, NUM_CLASSES + 1, 1)  # + background
        # parameter-free taps, so that hooks see these activations (no state_dict entries)
        self.encoder = nn.Identity()
        self.bottleneck = nn.Identity()
        self.label_mapping = self.builtin_class_mapping()
        self.common_names = [common for _, common in SPECIES]
        if pretrained or weights:
            self._load_weights(Path(weights) if weights else None)
        self.eval()

    # ----------------------------------------------------------------- weights and metadata
    def _load_weights(self, path: Path | None) -> None:
        path = path or weights_path()
        if path is None or not path.is_file():
            raise MissingDependencyError(
                "BatDetect2 weights not found: install the data-only wheel with "
                "`pip install --no-deps batdetect2==1.3.1` (see requirements-data.txt)"
            )
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        names = list(checkpoint.get("params", {}).get("class_names", []))
        if names != [s for s, _ in SPECIES]:
            raise CheckpointMismatchError(f"{path.name} is not the UK 17-species BatDetect2 model (classes: {names[:3]}...)")
        self.load_state_dict(checkpoint["state_dict"])
        self.weights_file = path

    @classmethod
    def bundled_weights_path(cls) -> Path | None:
        return weights_path()

    @classmethod
    def builtin_class_mapping(cls) -> dict[str, dict]:
        scientific = [s for s, _ in SPECIES]
        return {"label_to_index": {s: i for i, s in enumerate(scientific)}, "index_to_label": dict(enumerate(scientific))}

    @property
    def has_classifier(self) -> bool:
        return True  # the species head is part of the network

    def get_embedding_dim(self) -> int:
        return EMBEDDING_DIM

    def layer_modules(self) -> "OrderedDict[str, nn.Module]":
        return OrderedDict([("conv_dn_0", self.conv_dn_0), ("conv_dn_1", self.conv_dn_1),
                            ("conv_dn_2", self.conv_dn_2), ("encoder", self.encoder), ("bottleneck", self.bottleneck)])

    def check_recording(self, name: str, sample_rate: int) -> None:
        """Refuse recordings too slow for bat calls (BatDetect2 itself would upsample them and find little)."""
        if sample_rate < MIN_RECORDING_RATE:
            raise RecordingRateError(
                f"{name} is sampled at {sample_rate} Hz: too low for bat echolocation calls (BatDetect2 looks at "
                f"10-120 kHz and needs at least {MIN_RECORDING_RATE} Hz). Use the detector's full-spectrum recording "
                "(usually 250-500 kHz); time-expanded recordings are not supported."
            )

    # ----------------------------------------------------------------- network
    def _encode(self, spec: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x1 = self.conv_dn_0(spec)
        x2 = self.conv_dn_1(x1)
        x3 = self.conv_dn_2(x2)
        x3 = self.encoder(F.relu(self.conv_dn_3_bn(self.conv_dn_3(x3))))
        x = F.relu(self.conv_1d_bn(self.conv_1d(x3)))
        return x1, x2, x3, self.bottleneck(self.att(x))

    def network(self, spec: torch.Tensor) -> NetOutputs:
        """The network on a spectrogram batch (B, 1, 128, W), W a multiple of 32."""
        x1, x2, x3, bottleneck = self._encode(spec)
        x = bottleneck.expand(-1, -1, x3.shape[-2], -1)  # the attended time steps, at every encoder row
        x = self.conv_up_2(x + x3)
        x = self.conv_up_3(x + x2)
        x = self.conv_up_4(x + x1)
        features = F.relu(self.conv_op_bn(self.conv_op(x)))
        probs = torch.softmax(self.conv_classes_op(features), dim=1)
        class_probs = probs[:, :-1]
        return NetOutputs(class_probs.sum(1, keepdim=True), F.relu(self.conv_size_op(features)), class_probs,
                          features, bottleneck)

    def forward_features(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Bottleneck tokens (B, W / 16, 256): one per 8 ms of audio, after time attention."""
        return self._encode(spectrogram(x))[-1].squeeze(2).transpose(1, 2)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.return_features_only:
            return self.forward_features(self.prepare_input(x), padding_mask)
        return self.embed_and_score(x)[1]

    # ----------------------------------------------------------------- calls
    def _decode_calls(self, out: NetOutputs, starts: Sequence[float], max_freq_hz: float | None) -> list[tuple]:
        """Peaks of the detection map -> per call (window index, start, end, low, high, det, class probs, features)."""
        det = out.detection
        # 9x9 max-pool NMS, as two 1-D passes (the same maximum, far fewer comparisons)
        half = NMS_KERNEL // 2
        local_max = F.max_pool2d(F.max_pool2d(det, (NMS_KERNEL, 1), stride=1, padding=(half, 0)),
                                 (1, NMS_KERNEL), stride=1, padding=(0, half))
        peaks = det * (local_max == det)
        height, width = det.shape[-2:]
        # as the official code: the time of the last *output* column (not rescaled to STFT frames), so about half
        # the chunk's duration
        top_k = int((width * HOP + N_FFT - HOP) / SAMPLE_RATE * TOP_K_PER_SECOND)
        scores, flat = torch.topk(peaks.flatten(1), min(top_k, height * width))
        rows, cols = flat // width, flat % width
        freq_step = (MAX_FREQ_HZ - MIN_FREQ_HZ) / height
        calls = []
        for b in range(det.shape[0]):
            order = torch.argsort(cols[b] * height + rows[b])  # by time, then from high to low frequency
            keep = order[scores[b, order] > self.detection_threshold]
            y, x = rows[b, keep], cols[b, keep]
            box_w, box_h = out.size[b, 0, y, x], out.size[b, 1, y, x]
            low = (height - y.double()) * freq_step + MIN_FREQ_HZ
            high = low + box_h.double() * freq_step
            # BatDetect2 compares the whole-Hz high frequency with the recording's Nyquist frequency
            ok = high.floor() <= max_freq_hz if max_freq_hz is not None else torch.ones_like(low, dtype=torch.bool)
            calls.append((
                b,
                (frame_to_seconds(x.double()) + starts[b])[ok],
                (frame_to_seconds(x.double() + box_w.double()) + starts[b])[ok],
                low[ok], high[ok], scores[b, keep][ok],
                out.class_probs[b, :, y, x].T[ok], out.features[b, :, y, x].T[ok],
            ))
        return calls

    @torch.inference_mode()
    def detect_calls(
        self,
        x: torch.Tensor | np.ndarray,
        starts: Sequence[float] | None = None,
        valid_samples: Sequence[int] | None = None,
        source_rate: int | None = None,
        file: str = "",
    ) -> tuple[torch.Tensor, torch.Tensor, CallDetections]:
        """Window embeddings (B, 256), per-window species scores (B, 17) and the calls of a batch of windows.

        ``starts``: each window's start in the recording (s); ``valid_samples``: how much of each window is audio
        (the rest is padding; a shorter window is processed at its own length, as BatDetect2 does with the last
        chunk); ``source_rate``: the recording's rate, whose Nyquist frequency bounds the calls kept.
        """
        x = self.prepare_input(x)
        batch, samples = x.shape
        starts = list(starts) if starts is not None else [0.0] * batch
        valid = [samples if v is None else int(v) for v in (valid_samples or [None] * batch)]
        nyquist = source_rate / 2 if source_rate else None
        groups: dict[int, list[int]] = {}
        for i, v in enumerate(valid):
            groups.setdefault(min(max(v, 1), samples), []).append(i)
        embeddings = torch.zeros(batch, EMBEDDING_DIM, device=x.device)
        scores = torch.zeros(batch, NUM_CLASSES, device=x.device)
        found = []
        for length, members in groups.items():
            index = torch.tensor(members, device=x.device)
            out = self.network(spectrogram(x[index, :length]))
            embeddings[index] = out.bottleneck.mean(dim=(2, 3))
            for b, *call in self._decode_calls(out, [starts[i] for i in members], nyquist):
                found.append((members[b], *call))
                if call[5].shape[0]:
                    scores[members[b]] = call[5].amax(dim=0)
        found.sort(key=lambda item: item[0])
        return embeddings, scores, self._calls_table(found, file)

    def _calls_table(self, found: list[tuple], file: str) -> CallDetections:
        names = [s for s, _ in SPECIES]
        if not found or sum(int(c[1].shape[0]) for c in found) == 0:
            return CallDetections(pd.DataFrame(columns=CALL_COLUMNS + names), np.zeros((0, FEATURE_DIM), np.float32))
        cols = [torch.cat([c[k] for c in found]).cpu().numpy() for k in range(1, 8)]
        start, end, low, high, det, probs, feats = cols
        best = probs.argmax(axis=1)
        table = pd.DataFrame({
            "file": file, "start_s": start.astype(np.float64), "end_s": end.astype(np.float64),
            "low_freq_hz": low.astype(np.float64), "high_freq_hz": high.astype(np.float64),
            # float32 probabilities, shown to 6 decimals (not 0.7602199912071228)
            "detection_prob": det.astype(np.float64).round(6),
            "scientific_name": [SPECIES[i][0] for i in best], "common_name": [SPECIES[i][1] for i in best],
            "class_prob": probs[np.arange(len(best)), best].astype(np.float64).round(6),
        })
        table = pd.concat([table, pd.DataFrame(probs.astype(np.float64).round(6), columns=names)], axis=1)
        return CallDetections(table, feats.astype(np.float32))

    @torch.inference_mode()
    def embed_and_score(self, x: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings, scores, _ = self.detect_calls(x)
        return embeddings, scores
