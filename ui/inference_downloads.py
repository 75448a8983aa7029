"""The inference tab's downloads, written on demand for the filters shown (no Gradio here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ui.inference_view import Options, Run


def write_exports(run: Run, options: Options, flt: Any = None) -> list[str]:
    """Predictions CSV (settings in its header), Raven and Audacity tables per file, embeddings, settings.json.

    Written when asked for (the tab's "Prepare downloads", the ``/downloads`` endpoint), not with every run:
    Gradio copies and hashes each output file, which cost a tenth of a second per request."""
    from rl_core.atomic import atomic_write
    from rl_core.exports import audacity_labels, predictions_csv, raven_selection_table, save_embeddings_npz

    flt = flt or options.detection_filter()
    settings = run.export_settings(options)
    results = list(run.results.values())
    views = [flt.view(r) for r in results if r.has_scores]
    # your classifier's rows (all its classes at or above min_conf), the CLI's `predict --classifier` rows
    custom = {name: r.top_k_table(len(r.labels), options.min_conf) for name, r in run.custom.items()}
    downloads: list[str] = []
    if views or custom:
        path = run.out / "predictions.csv"
        with atomic_write(path, "w", encoding="utf-8") as handle:
            handle.write(predictions_csv(views, run.top_k, options.min_conf, settings=settings,
                                         extra=list(custom.values())))
        downloads.append(str(path))
    # one Raven table and one label track per file, with the model's and your classifier's detections (a model
    # without a species head: your classifier's alone)
    tables = [(view, run.top_k, custom.get(view.name)) for view in views]
    tables += [(r, len(r.labels), None) for name, r in run.custom.items() if name not in {v.name for v in views}]
    for result, k, extra in tables:
        stem = Path(result.name).stem
        for suffix, text in ((".selections.txt", raven_selection_table(result, k, options.min_conf, extra)),
                             (".labels.txt", audacity_labels(result, k, options.min_conf, extra))):
            with atomic_write(run.out / f"{stem}{suffix}", "w", encoding="utf-8") as handle:
                handle.write(text)
            downloads.append(str(run.out / f"{stem}{suffix}"))
    if any(r.embeddings is not None for r in results):
        downloads.append(str(save_embeddings_npz(results, run.out / "embeddings.npz", model=run.model)))
    if results:
        with atomic_write(run.out / "settings.json", "w", encoding="utf-8") as handle:
            json.dump(settings, handle, indent=1)
        downloads.append(str(run.out / "settings.json"))
    return downloads
