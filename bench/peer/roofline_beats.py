"""How fast can BEATs base possibly run in float32 on this CPU? A floor from its matrix multiplies alone.

    python -m bench.peer.roofline_beats [--batch 1] [--reps 5]   # from the repository root
    /work/avex-venv/bin/python -m bench.peer.roofline_beats     # adds avex's module to the comparison

Every implementation of BEATs base that keeps its float32 numbers has to run the same dense products: per layer
the q, k, v and output projections, the two feed-forward projections and the two attention products, plus the
patch embedding and the grouped position convolution once. This script times exactly those products with torch's
own kernels at the shapes of a 10-s clip (496 tokens), one after another as a forward pass would, and compares
the sum with a whole forward pass of rl_core's model (and of avex's, when avex is importable). The ratio
"forward / floor" bounds the speed-up any float32 rewrite could still get from everything that is not a matrix
multiply (front end, norms, GELU, softmax, bias gating, copies). It also reports this CPU's float32 and bfloat16
matmul rate on a large square product, for reference.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TOKENS, DIM, FFN, HEADS, LAYERS = 496, 768, 3072, 12, 12
HEAD_DIM = DIM // HEADS
SAMPLES = 160_000
KEY = "esp_aves2_naturelm_audio_v1_beats"


def best_of(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def square_rate(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of an n x n x n product in `dtype`."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n**3 / best_of(lambda: torch.mm(a, b), reps) / 1e9


def dense_products(batch: int):
    """A callable running BEATs base's dense products for `batch` 10-s clips, and their FLOP count."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    rows = batch * TOKENS
    x, hidden = rand(rows, DIM), rand(rows, FFN)
    w_qkvo, w_fc1, w_fc2 = rand(DIM, DIM), rand(FFN, DIM), rand(DIM, FFN)
    q, k, v = rand(batch, HEADS, TOKENS, HEAD_DIM), rand(batch, HEADS, TOKENS, HEAD_DIM), rand(batch, HEADS, TOKENS, HEAD_DIM)
    scores = rand(batch, HEADS, TOKENS, TOKENS)
    patches, w_patch = rand(rows, 256), rand(512, 256)
    projected_patches, w_proj = rand(rows, 512), rand(DIM, 512)
    pos_in, w_pos = rand(batch, DIM, TOKENS), rand(DIM, DIM // 16, 128)

    def run():
        F.linear(patches, w_patch)  # 16x16 patch embedding as a product
        F.linear(projected_patches, w_proj)  # post_extract_proj
        F.conv1d(pos_in, w_pos, padding=64, groups=16)
        for _ in range(LAYERS):
            for _ in range(4):  # q, k, v, out
                F.linear(x, w_qkvo)
            torch.matmul(q, k.transpose(-1, -2))
            torch.matmul(scores, v)
            F.linear(x, w_fc1)
            F.linear(hidden, w_fc2)

    flops = 2 * (rows * 256 * 512 + rows * 512 * DIM + batch * TOKENS * DIM * (DIM // 16) * 128
                 + LAYERS * (4 * rows * DIM * DIM + 2 * batch * HEADS * TOKENS * TOKENS * HEAD_DIM
                             + 2 * rows * DIM * FFN))
    return run, flops


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print(f"square 2048^3 product: float32 {square_rate(torch.float32):.0f} GFLOP/s, "
          f"bfloat16 {square_rate(torch.bfloat16):.0f} GFLOP/s")

    run, flops = dense_products(args.batch)
    with torch.inference_mode():
        floor = best_of(run, args.reps)
    print(f"BEATs dense products, batch {args.batch}: {flops / 1e9:.1f} GFLOP in {floor:.3f} s "
          f"({flops / floor / 1e9:.0f} GFLOP/s) = the float32 floor")

    waves = 0.1 * torch.randn(args.batch, SAMPLES, generator=torch.Generator().manual_seed(1))
    import rl_core

    ours = rl_core.build_model(KEY, device="cpu", return_features_only=True)
    with torch.inference_mode():
        t_ours = best_of(lambda: ours(waves), args.reps)
    rows = [("rl_core fp32", t_ours)]
    if importlib.util.find_spec("avex") is not None:
        from bench.peer.beats_avex_reference import build_avex_beats

        ref = build_avex_beats(KEY, None, seed=0)
        with torch.inference_mode():
            rows.append(("avex fp32", best_of(lambda: ref(waves), args.reps)))
    for name, seconds in rows:
        print(f"{name:<13} whole forward {seconds:.3f} s = {seconds / floor:.2f}x the floor, i.e. no float32 "
              f"rewrite with these kernels can be more than {seconds / floor:.2f}x faster")
    print(f"(best of {args.reps} passes each; load average at end {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
