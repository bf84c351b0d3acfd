"""Side-by-side CPU timings of the paths `train.precision` / `channels_last` and the FID network choose between.

Run from the repository root with nothing else running: `GENBENCH_DATA_DIR=../shared/data uv run python
docs/evidence/cpu_paths.py`. Prints one line per measurement (median of 5 after 2 warm-ups) and the CPU's
capabilities, for docs/benchmarks.md.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from genbench.components.inception import extract_features
from genbench.models import build_model, family


def median_seconds(fn, repeats: int = 5, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ddpm_step(base: int, dtype: torch.dtype | None, channels_last: bool) -> float:
    torch.manual_seed(0)
    model = build_model("ddpm", 1, 28, family("ddpm").arch(base_channels=base))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(64, 1, 28, 28) * 2 - 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            loss = model.training_losses(x, "model")["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return median_seconds(step)


def main() -> None:
    print(f"capability {torch.backends.cpu.get_cpu_capability()}, amx {torch.cpu._is_amx_tile_supported()}, "
          f"avx512_bf16 {torch.cpu._is_avx512_bf16_supported()}, threads {torch.get_num_threads()}")
    for base in (64,):
        fp32 = ddpm_step(base, None, False)
        cl = ddpm_step(base, None, True)
        bf16 = ddpm_step(base, torch.bfloat16, True)
        print(f"ddpm step base {base} batch 64: fp32 {fp32:.3f} s, fp32+channels_last {cl:.3f} s "
              f"({fp32 / cl:.2f}x), bf16+channels_last {bf16:.3f} s ({fp32 / bf16:.2f}x)")
    images = np.random.default_rng(0).integers(0, 256, (32, 28, 28, 1), dtype=np.uint8)
    exact = median_seconds(lambda: extract_features(images, batch_size=32), repeats=3, warmup=1)
    bf16 = median_seconds(lambda: extract_features(images, batch_size=32, precision="bf16"), repeats=3, warmup=1)
    print(f"FID features, 32 images (channels_last): fp32 {32 / exact:.1f} img/s, bf16 {32 / bf16:.1f} img/s "
          f"({exact / bf16:.2f}x)")


if __name__ == "__main__":
    main()
