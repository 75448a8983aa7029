"""Start the web app: `python app.py [--host H] [--port P] [--share] [--device D] [--preload MODEL] ...`."""

from __future__ import annotations

import argparse
import logging
import os
import re
import threading
import time

log = logging.getLogger("app")


def parse_size_mb(text: str) -> float:
    """'200', '200MB', '1.5GB', '500kb' -> megabytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(kb|mb|gb)?\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size: use e.g. 200, 200MB or 1GB")
    factor = {"kb": 1e-3, "mb": 1.0, "gb": 1e3, None: 1.0}[match.group(2)]
    return float(match.group(1)) * factor


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="rl_core workbench: inference, embedding maps, zoo, leaderboard")
    # Gradio's own variables give the defaults: a Hugging Face Space sets GRADIO_SERVER_NAME=0.0.0.0
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (0.0.0.0 for all; default $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=os.environ.get("GRADIO_SERVER_PORT", "7860"),
                        help="port (default $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--share", action="store_true", help="also ask Gradio for a public share link")
    parser.add_argument("--device", default="auto",
                        help="torch device for the models: auto (cuda, else mps, else cpu), cpu, cuda, cuda:1, mps")
    parser.add_argument("--preload", metavar="MODEL", action="append", default=[],
                        help="load this model before serving (repeatable), so the first request is fast")
    parser.add_argument("--max-file-size", type=parse_size_mb, default=200.0, metavar="SIZE",
                        help="largest upload, e.g. 200MB (default) or 1GB")
    parser.add_argument("--max-files", type=int, default=500, help="most recordings per embedding map")
    parser.add_argument("--max-total-size", type=parse_size_mb, default=2000.0, metavar="SIZE",
                        help="largest total (unzipped) size of one embedding map's recordings (default 2GB)")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip compiling UMAP in the background after start (the first map then takes ~20 s more)")
    parser.add_argument("--leaderboard-dir", default=None, help="leaderboard data folder (default: leaderboard_data/)")
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help="server folder whose subfolders the Projects tab may analyse (nothing outside it)")
    parser.add_argument("--projects-dir", default=None, metavar="DIR",
                        help="where the Projects tab keeps its projects (default ~/.local/share/rl_core/projects)")
    parser.add_argument("--project-workers", type=int, default=None, metavar="N",
                        help="worker processes per project analysis (default: one per physical core)")
    return parser.parse_args(argv)


def check_device(device: str) -> str:
    """The concrete device to use ('auto' resolved); exits with a readable message when it is unusable."""
    if device == "cpu":
        return device
    import torch

    if device == "auto":
        from rl_core.loading import resolve_device

        return str(resolve_device("auto"))

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if device == "mps" and not torch.backends.mps.is_available():
        raise SystemExit("--device mps: Apple MPS is not available on this machine; use --device cpu")
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as exc:
        raise SystemExit(f"--device {device}: {exc}") from None
    return device


def process_start() -> float:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - only for a log line
        return time.time()


def warm_up_umap() -> None:
    """Compile umap-learn's numba code once, after the server is up, so the first embedding map is quick."""
    try:
        import numpy as np

        from rl_core.projection import project

        project(np.random.default_rng(0).normal(size=(8, 4)), "UMAP", n_neighbors=3)
        log.info("UMAP is compiled and ready")
    except Exception:  # noqa: BLE001 - only an optimisation
        log.warning("UMAP warm-up failed; the first map will compile it", exc_info=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per internal HTTP request is noise
    args.device = check_device(args.device)
    log.info("flags parsed, %.1f s after the process started", time.time() - process_start())

    from ui import CSS_PATH, build_app, theme
    from ui.common import ASSETS_DIR, configure, get_model
    from ui.malloc import limit_malloc_arenas

    from ui import projects

    projects.configure(data_root=args.data_root, projects_dir=args.projects_dir, workers=args.project_workers)
    limit_malloc_arenas()
    configure(device=args.device, max_file_size_mb=args.max_file_size, max_files=args.max_files,
              max_total_mb=args.max_total_size)
    for name in args.preload:
        log.info("preloading %s on %s", name, args.device)
        try:
            get_model(name)
        except Exception as exc:  # noqa: BLE001 - a bad --preload stops the start with a readable message
            raise SystemExit(f"--preload {name}: {exc}") from None

    log.info("gradio and rl_core imported, %.1f s after the process started", time.time() - process_start())
    demo = build_app(args.leaderboard_dir)
    log.info("page built, %.1f s after the process started", time.time() - process_start())
    demo.queue(max_size=256)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        max_file_size=int(args.max_file_size * 1e6),
        allowed_paths=[str(ASSETS_DIR)],
        theme=theme(),
        css_paths=[CSS_PATH],
        prevent_thread_lock=True,
        show_error=True,
    )
    log.info("serving at %s, %.1f s after the process started", demo.local_url, time.time() - process_start())
    if args.share and not demo.share_url:
        msg = (f"No public link could be made (--share needs internet access to Gradio's share servers). "
               f"The app keeps serving locally at {demo.local_url}")
        log.warning(msg)
    if not args.no_warmup:
        threading.Thread(target=warm_up_umap, name="umap-warmup", daemon=True).start()
    demo.block_thread()


if __name__ == "__main__":
    main()
