"""Archive projects: folders of recordings analysed once into an embedded store, resumable and parallel.

``analyse_project`` fills a project (DuckDB tables + Parquet embeddings, see :mod:`rl_core.project.store`);
``ProjectStore`` reads it; :mod:`rl_core.project.exports` writes CSV, Raven, Audacity, Kaleidoscope, Parquet
and summaries through one :class:`rl_core.detection_filters.DetectionFilter`.
"""

from rl_core.project.analyse import AnalysisSummary, analyse_project
from rl_core.project.store import DEFAULT_SCORE_FLOOR, ProjectStore, RunSettings, scan_recordings

__all__ = ["AnalysisSummary", "DEFAULT_SCORE_FLOOR", "ProjectStore", "RunSettings", "analyse_project", "scan_recordings"]
