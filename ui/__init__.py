"""The web app: one module per tab, each with build() and plain handler functions; build_app() joins them."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ui.common import ASSETS_DIR, SETTINGS

TITLE = "Bioacoustics workbench · find, listen to and classify animal sounds"


def build_app(leaderboard_dir: str | Path | None = None) -> gr.Blocks:
    """The whole app as a gr.Blocks (not launched). Settings come from ui.common.configure()."""
    from ui import embedding_map, inference, leaderboard, projects, similar, zoo

    # delete_cache: uploads and results older than 2 h are removed every hour (long-running servers)
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 7200)) as demo:
        gr.Markdown(
            "# Bioacoustics workbench\n"
            "Find the species in your recordings, analyse a whole season of recorder files, look for more of a "
            "call and train your own classifier, with BirdNET, BatDetect2 and other audio models; compare models "
            f"on the leaderboard. Models run on **{SETTINGS.device}**; up to {SETTINGS.model_workers} requests are "
            "served at once, others queue.",
            elem_id="header",
        )
        with gr.Tabs():
            with gr.Tab("Inference", id="inference"):
                inference.build()
            with gr.Tab("Embedding map", id="map"):
                embedding_map.build()
            with gr.Tab("Projects", id="projects"):
                projects.build(demo)
            with gr.Tab("Find & train", id="similar"):
                similar.build(demo)
            with gr.Tab("Leaderboard", id="leaderboard"):
                leaderboard.build(demo, leaderboard_dir)
            with gr.Tab("Model zoo", id="zoo"):
                zoo.build()
        gr.Markdown(
            "Example recordings: see `assets/LICENSES.md`. BirdNET V2.4 weights: CC BY-NC-SA 4.0. "
            "ESP model weights: CC BY-NC-SA 4.0.",
            elem_id="footer",
        )
    return demo


CSS_PATH = ASSETS_DIR / "app.css"


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="emerald", secondary_hue="sky", neutral_hue="slate")
