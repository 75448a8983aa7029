"""Model zoo tab: every registered model in a searchable, sortable table; a row shows its card and a snippet."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from rl_core.catalog import weights_status
from ui.common import model_infos

COLUMNS = [
    "Model", "Family", "Parameters (M)", "Sample rate (Hz)", "Window (s)", "Embedding dim", "Classes",
    "Licence", "Weights",
]
DATATYPES = ["str", "str", "number", "number", "number", "number", "number", "str", "str"]


def weight_text(info: dict[str, Any]) -> str:
    """'bundled (runs offline)', 'downloads on first use (94 MB from ...)', 'unavailable offline (...)' ..."""
    return weights_status(info["name"]).text(info["checkpoint_size_mb"], check_source=True)


def zoo_table(search: str = "", family: str = "All") -> pd.DataFrame:
    """The zoo as a DataFrame, filtered by a case-insensitive search over name/family/description/licence."""
    rows = []
    needle = (search or "").strip().lower()
    for name, info in model_infos().items():
        if family and family != "All" and info["family"] != family:
            continue
        haystack = " ".join(str(info[k]) for k in ("name", "family", "description", "license", "architecture"))
        if needle and needle not in haystack.lower():
            continue
        params = info["parameters"]
        rows.append([
            name,
            info["family"],
            round(params / 1e6, 2) if params else None,
            info["sample_rate"],
            info["window_seconds"],
            info["embedding_dim"],
            info["num_classes"] if info["has_trained_classifier"] else None,
            info["license"],
            weight_text(info),
        ])
    return pd.DataFrame(rows, columns=COLUMNS)


def families() -> list[str]:
    return ["All", *sorted({info["family"] for info in model_infos().values()})]


def model_card(name: str) -> tuple[str, str]:
    """Markdown description and a copyable Python snippet for one model."""
    from rl_core.catalog import describe_model

    info = describe_model(name, verbose=False)
    params = f"{info['parameters'] / 1e6:.1f} M" if info["parameters"] else "unknown"
    if not info["has_trained_classifier"]:
        head = "no (embeddings only)"
    else:
        head = f"yes, {info['num_classes']} classes" if info["num_classes"] else "yes (classes in its label map)"
    checkpoint = info["checkpoint_path"] or "(none: random initial weights)"
    lines = [
        f"### {name}",
        info["description"] or "_No description._",
        "",
        f"- **Architecture**: `{info['architecture']}` ({info['family']})",
        f"- **Input**: {info['sample_rate']} Hz mono, {info['window_seconds']:g} s windows",
        f"- **Embedding dim**: {info['embedding_dim'] or 'unknown'}",
        f"- **Trained classifier**: {head}",
        f"- **Parameters**: {params}",
        f"- **Weights**: {weight_text(info)}",
        f"- **Checkpoint**: `{checkpoint}`",
        f"- **Licence**: {info['license']}",
    ]
    if info.get("source_url"):
        lines.append(f"- **Source**: {info['source_url']}")
    return "\n".join(lines), info["usage"]


def on_select(table: pd.DataFrame, evt: gr.SelectData) -> tuple[str, str]:
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    return model_card(str(table.iloc[row]["Model"]))


def build() -> None:
    """The zoo tab's components and events (call inside a gr.Blocks / gr.Tab)."""
    table = zoo_table()
    gr.Markdown(
        f"**{len(table)} registered model{'s' if len(table) != 1 else ''}.** Search, sort by clicking a column header, and select a row for "
        "its description and a Python snippet. Weights marked *bundled* or *on this machine* run offline."
    )
    with gr.Row():
        search = gr.Textbox(label="Search", placeholder="name, family, description, licence ...", scale=3,
                            elem_id="zoo-search")
        family = gr.Dropdown(families(), value="All", label="Family", scale=1)
    df = gr.Dataframe(
        table, datatype=DATATYPES, interactive=False, label="Models", elem_id="zoo-table",
        show_search="none", pinned_columns=1, max_height=720, wrap=True,
        column_widths=["21%", "8%", "10%", "9%", "7%", "9%", "7%", "14%", "15%"],  # headers fit at 1440 px
    )
    hint = "*Select a model in the table to see its description and how to use it.*" if len(table) else \
        "No models are registered."
    with gr.Row():
        card = gr.Markdown(hint, elem_id="zoo-card")
        code = gr.Code("", language="python", label="Use it from Python", interactive=False)
    search.change(zoo_table, [search, family], df, api_name="zoo_table", queue=False)
    family.change(zoo_table, [search, family], df, api_visibility="private", queue=False)
    df.select(on_select, df, [card, code], api_visibility="private", queue=False)
    gr.api(model_card, api_name="model_card", queue=False)
