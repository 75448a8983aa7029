"""Where the time of one warm inference request goes (the 10-s clip of bench_app.py, BirdNET), in-process.

Run from the repository root:  .venv/bin/python -m bench.profile_inference_request [--repeats 20] [--cprofile]
Times each step the inference tab's handler takes (median over the repeats) and the whole handler
(`ui.inference.on_run`); bench_app.py's latency through gradio_client minus the handler is Gradio's share
(`GRADIO_PROFILING=1` makes the server keep Gradio's own per-phase times: `bench_app.py --gradio-phases`).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

MODEL = "birdnet_v2_4"


def median_s(step, repeats: int) -> float:
    step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--cprofile", action="store_true", help="also print cProfile's top functions of on_run")
    args = parser.parse_args()

    from rl_core.audio import audio_info, iter_windows
    from rl_core.datasets_bundled import storm_petrel_recordings
    from rl_core.inference import analyse_recording
    from ui import inference, inference_figure, inference_downloads, inference_view
    from ui.common import get_model
    from ui.spectrogram import picture_uri, playable_segment, read_view, spectrogram_picture

    work = Path(tempfile.mkdtemp(prefix="profile_request_"))
    audio, sr = sf.read(storm_petrel_recordings()[1], frames=10 * 44100, always_2d=True)
    clip = work / "clip_10s.wav"
    sf.write(clip, audio.mean(axis=1), sr, subtype="PCM_16")
    model = get_model(MODEL)
    info = audio_info(clip)
    result = analyse_recording(model, clip, info=info)
    segment = read_view(clip, 0.0, 30.0, info)
    windows = torch.from_numpy(np.stack([w for _, w in iter_windows(clip, 48000, 3.0, info=info)]))
    options = inference_view.Options()
    flt = options.detection_filter()
    run = inference_view.analyse([str(clip)], MODEL, 5, options=options)
    view = inference_view.file_view(run, clip.name, options, flt)
    picture = picture_uri(spectrogram_picture(*segment))

    steps = {
        "header (audio_info)": lambda: audio_info(clip),
        "decode + resample 44.1->48 kHz + windows": lambda: list(iter_windows(clip, 48000, 3.0, info=info)),
        "model (embed_and_score, 4 windows)": lambda: [model.embed_and_score(windows[i:i + 1]) for i in range(4)],
        "analyse_recording (the three above)": lambda: analyse_recording(model, clip, info=info),
        "view decode (read_segment)": lambda: read_view(clip, 0.0, 30.0, info),
        "spectrogram picture": lambda: spectrogram_picture(*segment),
        "player WAV": lambda: playable_segment(*segment, work / "p.wav"),
        "filter view + species table + timeline": lambda: inference_view.file_view(run, clip.name, options, flt),
        "summary table": lambda: inference_view.summary_table(run, options, flt),
        "clips table (clip_choices)": lambda: inference_figure.clip_choices(run, clip.name, options),
        "downloads (on demand, /downloads; not in on_run)": lambda: inference_downloads.write_exports(run, options, flt),
        "view figure (plotly, to JSON)": lambda: inference_figure.view_figure(
            view, picture, 0, 10, segment[1] / 2000).to_json(),
        "listen in all (decode, picture, WAV, figure)": lambda: inference_figure.listen(run, clip.name, view, 0, 30,
                                                                                         options),
        "whole Gradio callback on_run": lambda: inference.on_run([str(clip)], "", MODEL, 5, progress=None),
    }
    print(f"median of {args.repeats} warm runs, 10-s 44.1 kHz clip, {MODEL}:")
    for name, step in steps.items():
        print(f"  {name:<45} {median_s(step, args.repeats) * 1000:7.1f} ms")
    if args.cprofile:
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.enable()
        for _ in range(5):
            inference.on_run([str(clip)], "", MODEL, 5, progress=None)
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
