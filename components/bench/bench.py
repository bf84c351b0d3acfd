"""`genbench bench`: the speed figures the project's claims rest on, each pair measured side by side in one run on
the same model, so that a ratio never mixes two machines, two days or two loads.

- Training images/s of the DDPM UNet: eager fp32 (NCHW) against the fast path, which is what the train stage's
  `dtype: auto` and `channels_last: auto` pick on this device (`precision.resolve`): bf16 autocast with
  channels_last on a GPU with bf16 and on a CPU with AMX or avx512-bf16, eager fp32 elsewhere; `compile` adds
  torch.compile on top (not something the train stage does). One step is what components/train/train.py takes:
  autocast forward, backward, gradient clipping, Adam; without data loading and the EMA update.
- Sampling images/s: DDPM's ancestral sampler over all T steps against DDIM's `ddim_steps`, the same weights
  (random: speed does not depend on them), in fp32 as the sample stage runs.
- FID feature extraction images/s: ours (`inception.extract_features`) against torch-fidelity's layout of the
  same network with the same weights (components/bench/fidelity_peer.py), and ours in bf16 where that is native.
- FLOPs of one training step and one network evaluation (components/bench/flops.py), the FLOP/s they achieved and
  their MFU against the device's peak (components/bench/peak.py).

Images are random (no dataset is read); only the FID network's weights are needed.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import BaseModel, Field

from genbench.components.bench import fidelity_peer
from genbench.components.bench.flops import count_flops, mfu
from genbench.components.bench.peak import Peak, device_peak, vendor_peak
from genbench.components.common.devices import device_name
from genbench.components.common.drawing import draw_images, image_labels
from genbench.components.common.dtypes import MixedPrecision, native_bf16
from genbench.components.common.dtypes import resolve as resolve_dtype
from genbench.components.common.timing import timed
from genbench.components.evaluate.inception import extract_features
from genbench.components.train.train import make_optimizer
from genbench.models import build_model
from genbench.models.base import eval_mode
from genbench.models.config import PositiveInt, Strict, TrainConfig
from genbench.models.ddpm import DDPM, DDPMArch
from genbench.models.samplers import DiffusionSampling

ENTRY = "ddpm"


class BenchSizes(Strict):
    """How much work each measurement does; `DEFAULT_SIZES` holds each device type's defaults."""

    batch_size: PositiveInt  # training images per step
    sample_n: PositiveInt  # images each sampler draws, in one batch
    ddim_steps: PositiveInt = 50  # DDIM's steps; the DDPM sampler walks all of the model's timesteps
    feature_n: PositiveInt  # images per pass of each FID feature extractor
    feature_batch: PositiveInt  # images per Inception forward pass
    # timed repeats of training steps, DDIM runs, feature passes and matrix products (medians are reported);
    # the DDPM sampler runs once: its T steps already average over many network evaluations
    repeats: PositiveInt
    warmup: Annotated[int, Field(ge=0)]  # untimed repeats before the timed ones
    matmul_size: PositiveInt  # side of the bf16 matrix product that measures the peak
    compile: bool = False  # torch.compile the fast path's forward and loss


# 2 CPU cores: a few minutes at the `full` layout (base 128: a training step takes seconds, an image's 1000
# sampling steps about a minute); batch 64 matches the CPU rows of docs/benchmarks.md. An H100: well under a
# minute, with enough repeats that kernel-launch jitter averages out. Estimated from per-step costs, not timed.
DEFAULT_SIZES: dict[str, dict[str, int]] = {
    "cpu": {"batch_size": 64, "sample_n": 1, "feature_n": 40, "feature_batch": 20, "repeats": 3, "warmup": 1,
            "matmul_size": 4096},
    "cuda": {"batch_size": 128, "sample_n": 64, "feature_n": 512, "feature_batch": 128, "repeats": 10,
             "warmup": 3, "matmul_size": 8192},
}


class Rate(BaseModel):
    seconds: float  # median wall time of one timed repeat
    images_per_s: float
    flops_per_s: float | None = None  # counted FLOPs over the seconds
    mfu: float | None = None  # flops_per_s over the peak


class TrainFigures(BaseModel):
    flops_per_step: int  # one step at batch_size, forward and backward
    eager_fp32: Rate
    fast: Rate
    speedup: float  # fast over eager images/s


class SampleFigures(BaseModel):
    flops_per_step: int  # one network evaluation over sample_n images
    ddpm_steps: int
    ddim_steps: int
    ddpm: Rate
    ddim: Rate
    speedup: float  # DDIM over DDPM images/s


class FeatureFigures(BaseModel):
    peer: Rate | None  # None when torch-fidelity is not installed
    ours_fp32: Rate
    ours_bf16: Rate | None  # None where bf16 is not native
    speedup_fp32: float | None  # ours fp32 over the peer
    speedup_bf16: float | None  # ours bf16 over the peer
    difference: float | None  # relative norm of ours fp32 minus the peer's features: they compute one function


class Goal(BaseModel):
    goal: str
    target: float
    value: float
    met: bool
    judged: bool  # whether this run is what the goal is stated for (an H100; the DDPM 1000 / DDIM 50 sizes)


class BenchResult(BaseModel):
    date: str
    device: str
    device_name: str
    torch: str
    profile: str  # whose `models.ddpm` layout was benched
    arch: dict[str, Any]
    image: tuple[int, int]  # (channels, size)
    parameters: int
    fast_path: str
    sizes: BenchSizes
    peak: Peak
    train: TrainFigures
    sample: SampleFigures
    features: FeatureFigures
    goals: list[Goal]
    notes: list[str]


def default_sizes(device: torch.device) -> dict[str, int]:
    return dict(DEFAULT_SIZES["cuda" if device.type == "cuda" else "cpu"])


def describe_path(precision: str, channels_last: bool, compiled: bool) -> str:
    """A training path in words, as the row and the summary print it."""
    parts = ["eager fp32" if precision == "fp32" else f"{precision} autocast"]
    parts += ["channels_last"] if channels_last else []
    parts += ["torch.compile"] if compiled else []
    return " + ".join(parts)


def bench(arch: DDPMArch, train: TrainConfig, image: tuple[int, int], sizes: BenchSizes, device: torch.device,
          profile: str) -> BenchResult:
    """Measure every figure of the module docstring on `device` for a DDPM of `arch` on (channels, size)
    images, trained with `train`'s optimizer and clipping; ValueError before any work on sizes that cannot run."""
    DiffusionSampling(sampler="ddim", sample_steps=sizes.ddim_steps).check(arch)
    name = device_name(device)
    precision, channels_last = resolve_dtype("auto", "auto", device)
    peak = device_peak(device, name, sizes.matmul_size, sizes.repeats, sizes.warmup)
    training = _training_figures(arch, train, image, sizes, device, (precision, channels_last), peak)
    sampling = _sampling_figures(arch, image, sizes, device, peak)
    notes = _notes(device, precision, sizes.compile)
    if any(rate.mfu > 1 for rate in (training.eager_fp32, training.fast, sampling.ddpm, sampling.ddim)):
        notes.append("MFU above 100 %: the model ran faster than the measured peak, so the peak is too low; "
                     "measure it on a larger matrix (matmul_size, --matmul-size)")
    return BenchResult(
        date=datetime.date.today().isoformat(), device=str(device), device_name=name, torch=torch.__version__,
        profile=profile, arch=arch.model_dump(mode="json"), image=image,
        parameters=_model(arch, image, torch.device("cpu")).num_parameters(),
        fast_path=describe_path(precision, channels_last, sizes.compile), sizes=sizes, peak=peak, train=training,
        sample=sampling, features=_feature_figures(image, sizes, device),
        goals=goals(name, training, sampling, arch.timesteps, sizes.ddim_steps), notes=notes,
    )  # fmt: skip


def goals(name: str, training: TrainFigures, sampling: SampleFigures, timesteps: int, ddim_steps: int) -> list[Goal]:
    """The issue's goals, stated for an H100: met or not here, and whether this run is what they are judged on."""
    known = vendor_peak(name)
    h100 = known is not None and known.part.startswith("H100")
    at_goal_sizes = timesteps == 1000 and ddim_steps == 50
    return [
        Goal(goal="fast path training >= 2x eager fp32 images/s", target=2.0, value=training.speedup,
             met=training.speedup >= 2.0, judged=h100),
        Goal(goal="fast path training MFU >= 35 %", target=0.35, value=training.fast.mfu,
             met=training.fast.mfu >= 0.35, judged=h100),
        Goal(goal="DDIM 50 >= 15x DDPM 1000 images/s", target=15.0, value=sampling.speedup,
             met=sampling.speedup >= 15.0, judged=h100 and at_goal_sizes),
    ]  # fmt: skip


def _notes(device: torch.device, precision: str, compiled: bool) -> list[str]:
    notes = ["sampling runs in fp32, as the sample stage does; its MFU is against the bf16 peak"]
    if precision == "fp32":
        notes.append("no native bf16 on this device: `dtype: auto` keeps eager fp32, so the fast path is "
                     "eager fp32 and its ratio measures noise; the measured bf16 peak is emulated and low, so MFU "
                     "overstates")
    if compiled:
        notes.append("the fast path adds torch.compile, which `genbench train` does not use")
    if not fidelity_peer.installed():
        notes.append(f"torch-fidelity is not installed: no peer for the FID features ({fidelity_peer.INSTALL_HINT})")
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        notes.append("eager fp32 convolutions may run in TF32 (torch.backends.cudnn.allow_tf32, on by default)")
    return notes


def _rate(seconds: float, images: int, peak: Peak, flops: float | None = None) -> Rate:
    achieved = None if flops is None else flops / seconds
    return Rate(seconds=seconds, images_per_s=images / seconds, flops_per_s=achieved,
                mfu=None if achieved is None else mfu(achieved, peak.flops_per_s))


def _training_figures(arch: DDPMArch, train: TrainConfig, image: tuple[int, int], sizes: BenchSizes,
                      device: torch.device, fast_path: tuple[str, bool], peak: Peak) -> TrainFigures:
    """Eager fp32, then the fast path (precision, channels_last), each on a fresh model from the same weights."""
    eager_step = _training_step(arch, train, image, sizes.batch_size, device, "fp32", False, False)
    flops = count_flops(eager_step)  # the counted step is the eager path's first warm-up
    eager_seconds, _ = timed(eager_step, device, sizes.repeats, max(sizes.warmup - 1, 0))
    del eager_step  # its model and optimizer state, before the fast path's are built
    fast_step = _training_step(arch, train, image, sizes.batch_size, device, *fast_path, sizes.compile)
    fast_seconds, _ = timed(fast_step, device, sizes.repeats, max(sizes.warmup, int(sizes.compile)))
    eager = _rate(eager_seconds, sizes.batch_size, peak, flops)
    fast = _rate(fast_seconds, sizes.batch_size, peak, flops)
    return TrainFigures(flops_per_step=flops, eager_fp32=eager, fast=fast,
                        speedup=fast.images_per_s / eager.images_per_s)


def _sampling_figures(arch: DDPMArch, image: tuple[int, int], sizes: BenchSizes, device: torch.device,
                      peak: Peak) -> SampleFigures:
    """DDPM over all T steps (once: T steps already average), then DDIM (median of `repeats`), same weights."""
    ddpm, ddim = DiffusionSampling(sampler="ddpm"), DiffusionSampling(sampler="ddim", sample_steps=sizes.ddim_steps)
    model = _model(arch, image, device)
    flops = _sampling_step_flops(model, sizes.sample_n, device)

    def draw(sampling: DiffusionSampling) -> Callable[[], np.ndarray]:
        return lambda: draw_images(model, range(sizes.sample_n), 0, sampling)

    with torch.inference_mode():
        for _ in range(min(sizes.warmup, 1)):
            draw(ddim)()  # the same network as DDPM's: one run warms both
        ddpm_seconds, _ = timed(draw(ddpm), device, 1, 0)
        ddim_seconds, _ = timed(draw(ddim), device, sizes.repeats, 0)
    ddpm_steps, ddim_steps = ddpm.network_evaluations(arch), ddim.network_evaluations(arch)
    slow = _rate(ddpm_seconds, sizes.sample_n, peak, flops * ddpm_steps)
    fast = _rate(ddim_seconds, sizes.sample_n, peak, flops * ddim_steps)
    return SampleFigures(flops_per_step=flops, ddpm_steps=ddpm_steps, ddim_steps=ddim_steps, ddpm=slow, ddim=fast,
                         speedup=fast.images_per_s / slow.images_per_s)


def _model(arch: DDPMArch, image: tuple[int, int], device: torch.device) -> DDPM:
    """The DDPM, seeded: every path starts from the same weights."""
    torch.manual_seed(0)
    return build_model(ENTRY, image[0], image[1], arch).to(device)


def _training_step(arch: DDPMArch, train: TrainConfig, image: tuple[int, int], batch_size: int,
                   device: torch.device, precision: str, channels_last: bool, compiled: bool) -> Callable[[], None]:
    """One optimizer step on a fixed random batch, on a fresh model, the way components/train/train.py steps."""
    channels, size = image
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = _model(arch, image, device).to(memory_format=memory_format)
    optimizer = make_optimizer(train, model.parameters())
    amp = MixedPrecision(precision, device, {"model": optimizer}, train.grad_clip)
    batch = torch.rand(batch_size, channels, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batch = batch.to(device).contiguous(memory_format=memory_format)
    labels = image_labels(range(batch_size), model.num_classes)

    def loss() -> torch.Tensor:
        return model.training_losses(batch, "model", None if labels is None else labels.to(device))["loss"]

    forward = torch.compile(loss) if compiled else loss

    def step() -> None:
        with amp.autocast():
            value = forward()
        optimizer.zero_grad(set_to_none=True)
        amp.backward_and_step("model", value, optimizer)

    return step


def _sampling_step_flops(model: DDPM, n: int, device: torch.device) -> int:
    """FLOPs of one network evaluation over n images, as the samplers call it (eval mode, no gradients)."""
    channels, size, _ = model.diffusion_shape
    labels = image_labels(range(n), model.num_classes)
    eps = model.noise_predictor(None if labels is None else labels.to(device))
    x, t = torch.zeros(n, channels, size, size, device=device), torch.zeros(n, dtype=torch.long, device=device)
    with torch.no_grad(), eval_mode(model):
        return count_flops(lambda: eps(x, t))


def _feature_figures(image: tuple[int, int], sizes: BenchSizes, device: torch.device) -> FeatureFigures:
    """Ours (fp32, and bf16 where native) and the peer on the same random uint8 images."""
    channels, size = image
    images = np.random.default_rng(0).integers(0, 256, (sizes.feature_n, size, size, channels), dtype=np.uint8)

    def run(extract: Callable[[np.ndarray], np.ndarray]) -> tuple[Rate, np.ndarray]:
        seconds, features = timed(lambda: extract(images), device, sizes.repeats, sizes.warmup)
        return Rate(seconds=seconds, images_per_s=sizes.feature_n / seconds), features

    def ours(precision: str) -> Callable[[np.ndarray], np.ndarray]:
        return lambda batch: extract_features(batch, sizes.feature_batch, str(device), precision)

    ours_fp32, exact = run(ours("fp32"))
    ours_bf16 = run(ours("bf16"))[0] if native_bf16(device) else None
    if not fidelity_peer.installed():
        return FeatureFigures(peer=None, ours_fp32=ours_fp32, ours_bf16=ours_bf16, speedup_fp32=None,
                              speedup_bf16=None, difference=None)
    peer, reference = run(fidelity_peer.peer_extractor(sizes.feature_batch, device))
    return FeatureFigures(
        peer=peer, ours_fp32=ours_fp32, ours_bf16=ours_bf16,
        speedup_fp32=ours_fp32.images_per_s / peer.images_per_s,
        speedup_bf16=None if ours_bf16 is None else ours_bf16.images_per_s / peer.images_per_s,
        difference=float(np.linalg.norm(exact - reference) / np.linalg.norm(reference)),
    )  # fmt: skip
