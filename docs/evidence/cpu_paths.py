"""Side-by-side CPU timings of the paths `train.precision` / `channels_last` and the FID network choose between.

Run from the repository root with nothing else running:

    GENBENCH_DATA_DIR=../shared/data uv run --with torch-fidelity==0.3.0 python docs/evidence/cpu_paths.py

Prints the CPU, then one line per measurement (median of 5 training steps after 2 warm-ups; median of 3 feature
passes after 1), for docs/benchmarks.md:

- the DDPM UNet training step (the `full` layout: Ho et al.'s, batch 64) at base 64 and 128 (`full`'s), and
  at base 64 without dropout: eager fp32 NCHW, fp32 channels_last, and the fast path `precision: auto` takes on
  AMX / avx512-bf16 CPUs (bf16 autocast, channels_last);
- FID feature extraction from 40 uint8 28×28 images in batches of 10 and 40 (TF1 resize included): torch-fidelity's
  `FeatureExtractorInceptionV3` (the peer: eager NCHW fp32) with the same weights copied in, the TorchScript
  network as loaded (NCHW), ours (channels_last fp32, the default) and ours in bf16; then how far the features
  and the FID of 200 against 200 real test images move from the exact ones.

Without torch-fidelity the peer row is left out (`uv run --with torch-fidelity` brings it for this run only; it
is not a project dependency).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from genbench.components import inception
from genbench.components.inception import extract_features, tf1_resize_bilinear
from genbench.components.metrics import feature_stats, frechet_distance
from genbench.models import build_model, family


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def ddpm_step(base: int, dropout: float, bf16: bool, channels_last: bool) -> float:
    torch.manual_seed(0)
    model = build_model("ddpm", 1, 28, family("ddpm").arch(base_channels=base, dropout=dropout))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(64, 1, 28, 28) * 2 - 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.training_losses(x, "model")["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return median_seconds(step)


def fashion_test_images(n: int) -> np.ndarray:
    path = Path(os.environ[inception.DATA_DIR_ENV]) / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as handle:
        raw = handle.read(16 + n * 28 * 28)
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, 28, 28, 1).copy()


def torch_fidelity_extractor() -> Callable[[torch.Tensor], torch.Tensor] | None:
    """torch-fidelity's InceptionV3 (eager, NCHW) with the TorchScript network's weights copied in: each of its
    94 BasicConv2d blocks, in order, takes one TorchScript conv's (weight, beta, mean, var), with BatchNorm's
    scale 1 as in TF's graph (shared/data/README.md: the two map one to one). Its 1008-class head, which the
    pool3 network lacks, stays random and unused. Takes uint8 NCHW, resizes the TF1 way itself, returns pool3."""
    if importlib.util.find_spec("torch_fidelity") is None:
        return None
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d, FeatureExtractorInceptionV3

    class Blank(FeatureExtractorInceptionV3):
        """Built without weights: the constructor's own load is skipped, the TorchScript's are copied in below."""

        def load_state_dict(self, *_: object, **__: object) -> None:
            pass

    scripted = dict(torch.jit.load(str(inception.locate_weights())).named_parameters())
    convs = [name[: -len(".weight")] for name in scripted if name.endswith(".weight")]
    with tempfile.TemporaryDirectory() as folder:
        torch.save({}, Path(folder) / "empty.pth")  # the constructor reads the file it is given
        network = Blank("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(Path(folder) / "empty.pth"))
    blocks = [m for m in network.modules() if isinstance(m, BasicConv2d)]
    if len(blocks) != len(convs):
        raise RuntimeError(f"{len(blocks)} BasicConv2d blocks against {len(convs)} TorchScript convolutions")
    with torch.no_grad():
        for block, conv in zip(blocks, convs):
            block.conv.weight.copy_(scripted[f"{conv}.weight"])  # a shape mismatch raises here
            block.bn.weight.fill_(1.0)
            block.bn.bias.copy_(scripted[f"{conv}.beta"])
            block.bn.running_mean.copy_(scripted[f"{conv}.mean"])
            block.bn.running_var.copy_(scripted[f"{conv}.var"])
    network.eval()

    def run(batch: torch.Tensor) -> torch.Tensor:
        return network(batch.repeat(1, 3, 1, 1))[0]

    return run


def feature_rates(images: np.ndarray, batch_size: int) -> dict[str, tuple[float, np.ndarray]]:
    """images/s and features of each extraction path on the same uint8 NHWC images, `batch_size` at a time."""
    batches = [torch.from_numpy(images[i : i + batch_size]).permute(0, 3, 1, 2).contiguous()
               for i in range(0, len(images), batch_size)]
    scripted = torch.jit.load(str(inception.locate_weights())).eval()

    def as_loaded(batch: torch.Tensor) -> torch.Tensor:
        x = tf1_resize_bilinear(batch.float().repeat(1, 3, 1, 1), inception.INPUT_SIZE)
        return scripted((x - 128.0) / 128.0)

    def each_batch(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], np.ndarray]:
        return lambda: torch.cat([fn(batch) for batch in batches]).double().numpy()

    paths: dict[str, Callable[[], np.ndarray]] = {}
    peer = torch_fidelity_extractor()
    if peer is not None:
        paths["torch-fidelity InceptionV3, eager NCHW fp32 (peer)"] = each_batch(peer)
    paths["TorchScript as loaded, NCHW fp32"] = each_batch(as_loaded)
    paths["ours: channels_last fp32 (default)"] = lambda: extract_features(images, batch_size=batch_size)
    paths["ours: channels_last bf16"] = lambda: extract_features(images, batch_size=batch_size, precision="bf16")
    results = {}
    with torch.inference_mode():
        for name, fn in paths.items():
            seconds = median_seconds(fn, repeats=3, warmup=1)
            results[name] = (len(images) / seconds, fn())
    return results


def main() -> None:
    print(f"CPU {cpu_name()}, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"amx {torch.cpu._is_amx_tile_supported()}, avx512_bf16 {torch.cpu._is_avx512_bf16_supported()}, "
          f"threads {torch.get_num_threads()}, torch {torch.__version__}")
    for base, dropout in ((64, 0.1), (64, 0.0), (128, 0.1)):
        fp32 = ddpm_step(base, dropout, bf16=False, channels_last=False)
        cl = ddpm_step(base, dropout, bf16=False, channels_last=True)
        fast = ddpm_step(base, dropout, bf16=True, channels_last=True)
        print(f"ddpm step base {base} dropout {dropout} batch 64: eager fp32 {fp32:.3f} s | fp32 channels_last "
              f"{cl:.3f} s ({fp32 / cl:.2f}x) | bf16 channels_last {fast:.3f} s ({fp32 / fast:.2f}x)")

    images = fashion_test_images(40)
    for batch_size in (10, 40):  # quick's evaluate.batch_size; a larger batch
        rates = feature_rates(images, batch_size)
        peer_name = next(iter(rates))
        peer_rate, peer_features = rates[peer_name]
        for name, (rate, features) in rates.items():
            moved = np.linalg.norm(features - peer_features) / np.linalg.norm(peer_features)
            print(f"FID features, 40 images in batches of {batch_size}: {name}: {rate:.1f} img/s "
                  f"({rate / peer_rate:.2f}x the first row); features differ from it by {moved:.1e} (relative norm)")

    real = fashion_test_images(400)
    exact = extract_features(real, batch_size=50)
    bf16 = extract_features(real, batch_size=50, precision="bf16")
    fid_exact = frechet_distance(*feature_stats(exact[:200]), *feature_stats(exact[200:]))
    fid_bf16 = frechet_distance(*feature_stats(bf16[:200]), *feature_stats(bf16[200:]))
    print(f"FID of test images 0-199 against 200-399: fp32 {fid_exact:.4f}, bf16 {fid_bf16:.4f} "
          f"({100 * (fid_bf16 - fid_exact) / fid_exact:+.2f} %)")


if __name__ == "__main__":
    main()
