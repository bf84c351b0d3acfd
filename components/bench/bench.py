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

Images are random (no dataset is read); only the FID network's weights are needed. Each phase says when it starts
and ends and is saved as it finishes (components/bench/progress.py). A phase that would only measure emulation or
repeat another is skipped and says why: on a device without native bf16 the fast path is eager fp32 itself (timed
once) and our bf16 features are not timed, and the peak is an fp32 matrix product's.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import BaseModel, Field

from genbench.components.bench import fidelity_peer
from genbench.components.bench.flops import count_flops, mfu
from genbench.components.bench.peak import Peak, device_peak, vendor_peak
from genbench.components.bench.progress import Phases
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
BF16_EMULATED = ("bf16 is emulated on this device (no AMX or avx512-bf16, or its kernels capped below them), slower "
                 "than fp32: a bf16 figure would measure the emulation")


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
    matmul_size: PositiveInt  # side of the matrix product that measures the peak
    compile: bool = False  # torch.compile the fast path's forward and loss


# 2 CPU cores, at the `full` layout (base 128, T 1000), on a CPU with AMX and on one with AVX2 only: the DDPM
# sampler's T network evaluations of one image are most of the run, so the rest is sized to leave it room (training
# batch 32; our and the peer's features on 40 images), and the run stays inside the budget docs/benchmarks.md states.
# An H100: well under a minute, with enough repeats that kernel-launch jitter averages out. Estimated from per-step
# costs measured alone (docs/benchmarks.md), not from a whole timed run.
DEFAULT_SIZES: dict[str, dict[str, int]] = {
    "cpu": {"batch_size": 32, "sample_n": 1, "feature_n": 40, "feature_batch": 20, "repeats": 3, "warmup": 1,
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
    fast: Rate | None  # None where the fast path is eager fp32 itself (no native bf16, no compile): timed once
    speedup: float | None  # fast over eager images/s


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
    ours_bf16: Rate | None  # None where bf16 is not native (skipped: BF16_EMULATED)
    speedup_fp32: float | None  # ours fp32 over the peer
    speedup_bf16: float | None  # ours bf16 over the peer
    difference: float | None  # relative norm of ours fp32 minus the peer's features: they compute one function


class Goal(BaseModel):
    goal: str
    target: float
    value: float | None  # None when this run did not measure it (the fast path was eager fp32 itself)
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
    skipped: dict[str, str] = {}  # phase → why it did not run here (progress.Phases' keys)


def default_sizes(device: torch.device) -> dict[str, int]:
    return dict(DEFAULT_SIZES["cuda" if device.type == "cuda" else "cpu"])


def describe_path(precision: str, channels_last: bool, compiled: bool) -> str:
    """A training path in words, as the row and the summary print it."""
    parts = ["eager fp32" if precision == "fp32" else f"{precision} autocast"]
    parts += ["channels_last"] if channels_last else []
    parts += ["torch.compile"] if compiled else []
    return " + ".join(parts)


def said(rate: Rate) -> str:
    """A rate as a progress line ends: images/s, and MFU where FLOPs were counted."""
    return f"{rate.images_per_s:.3g} img/s" + ("" if rate.mfu is None else f", MFU {100 * rate.mfu:.1f} %")


def bench(arch: DDPMArch, train: TrainConfig, image: tuple[int, int], sizes: BenchSizes, device: torch.device,
          profile: str, phases: Phases | None = None) -> BenchResult:
    """Measure every figure of the module docstring on `device` for a DDPM of `arch` on (channels, size)
    images, trained with `train`'s optimizer and clipping, phase by phase through `phases` (silent when None);
    ValueError before any work on sizes that cannot run."""
    DiffusionSampling(sampler="ddim", sample_steps=sizes.ddim_steps).check(arch)
    phases = phases or Phases()
    name = device_name(device)
    precision, channels_last = resolve_dtype("auto", "auto", device)
    native = native_bf16(device)
    fast_path = describe_path(precision, channels_last, sizes.compile)
    parameters = _model(arch, image, torch.device("cpu")).num_parameters()
    phases.about(kind="bench", date=datetime.date.today().isoformat(), device=str(device), device_name=name,
                 torch=torch.__version__, profile=profile, arch=arch, image=image, parameters=parameters,
                 fast_path=fast_path, sizes=sizes)
    peak_dtype = "bf16" if native else "fp32"
    peak = phases.run(
        "peak", f"peak: {peak_dtype} {sizes.matmul_size}² matrix product, median of {sizes.repeats}",
        lambda: device_peak(device, name, sizes.matmul_size, sizes.repeats, sizes.warmup, peak_dtype),
        lambda p: f"{p.matmul_flops_per_s / 1e12:.3g} TFLOP/s measured; MFU against {p.flops_per_s / 1e12:.4g} "
                  f"TFLOP/s ({p.kind})")  # fmt: skip
    training = _training_figures(arch, train, image, sizes, device, (precision, channels_last), peak, phases)
    sampling = _sampling_figures(arch, image, sizes, device, peak, phases)
    features = _feature_figures(image, sizes, device, native, phases)
    notes = _notes(device, precision, sizes.compile)
    rates = [training.eager_fp32, training.fast, sampling.ddpm, sampling.ddim]
    if any(rate is not None and rate.mfu is not None and rate.mfu > 1 for rate in rates):
        notes.append("MFU above 100 %: the model ran faster than the measured peak, so the peak is too low; "
                     "measure it on a larger matrix (matmul_size, --matmul-size)")
    return BenchResult(
        date=phases.record["date"], device=str(device), device_name=name, torch=torch.__version__, profile=profile,
        arch=arch.model_dump(mode="json"), image=image, parameters=parameters, fast_path=fast_path, sizes=sizes,
        peak=peak, train=training, sample=sampling, features=features,
        goals=goals(name, training, sampling, arch.timesteps, sizes.ddim_steps), notes=notes,
        skipped=dict(phases.record["skipped"]),
    )  # fmt: skip


def goals(name: str, training: TrainFigures, sampling: SampleFigures, timesteps: int, ddim_steps: int) -> list[Goal]:
    """The issue's goals, stated for an H100: met or not here, and whether this run is what they are judged on."""
    known = vendor_peak(name)
    h100 = known is not None and known.part.startswith("H100")
    at_goal_sizes = timesteps == 1000 and ddim_steps == 50
    fast_mfu = None if training.fast is None else training.fast.mfu
    return [
        Goal(goal="fast path training >= 2x eager fp32 images/s", target=2.0, value=training.speedup,
             met=training.speedup is not None and training.speedup >= 2.0, judged=h100),
        Goal(goal="fast path training MFU >= 35 %", target=0.35, value=fast_mfu,
             met=fast_mfu is not None and fast_mfu >= 0.35, judged=h100),
        Goal(goal="DDIM 50 >= 15x DDPM 1000 images/s" + ("" if at_goal_sizes else
                                                          f" (measured: DDIM {ddim_steps} against DDPM {timesteps})"),
             target=15.0, value=sampling.speedup,
             met=sampling.speedup >= 15.0, judged=h100 and at_goal_sizes),
    ]  # fmt: skip


def _notes(device: torch.device, precision: str, compiled: bool) -> list[str]:
    notes = ["sampling runs in fp32, as the sample stage does; its MFU is against the peak"]
    if precision == "fp32":
        notes.append("no native bf16 on this device: `dtype: auto` keeps eager fp32, so the fast path is eager fp32 "
                     "(timed once) and the peak is an fp32 matrix product's")
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
                      device: torch.device, fast_path: tuple[str, bool], peak: Peak, phases: Phases) -> TrainFigures:
    """Eager fp32, then the fast path (precision, channels_last), each on a fresh model from the same weights; the
    fast path only where it is not eager fp32 itself."""
    counted: list[int] = []
    repeats = f"batch {sizes.batch_size}, median of {sizes.repeats}"

    def eager() -> Rate:
        step = _training_step(arch, train, image, sizes.batch_size, device, "fp32", False, False)
        counted.append(count_flops(step))  # the counted step is the eager path's first warm-up
        seconds, _ = timed(step, device, sizes.repeats, max(sizes.warmup - 1, 0))
        return _rate(seconds, sizes.batch_size, peak, counted[0])

    eager_rate = phases.run("train_eager", f"training, eager fp32 ({repeats})", eager, said)
    title = f"training, fast path {describe_path(*fast_path, sizes.compile)}"
    if fast_path == ("fp32", False) and not sizes.compile:
        phases.skip("train_fast", title, "it is eager fp32 itself on this device (no native bf16): timed once, above")
        return TrainFigures(flops_per_step=counted[0], eager_fp32=eager_rate, fast=None, speedup=None)

    def fast() -> Rate:
        step = _training_step(arch, train, image, sizes.batch_size, device, *fast_path, sizes.compile)
        seconds, _ = timed(step, device, sizes.repeats, max(sizes.warmup, int(sizes.compile)))
        return _rate(seconds, sizes.batch_size, peak, counted[0])

    fast_rate = phases.run("train_fast", f"{title} ({repeats})", fast, said)
    return TrainFigures(flops_per_step=counted[0], eager_fp32=eager_rate, fast=fast_rate,
                        speedup=fast_rate.images_per_s / eager_rate.images_per_s)


def _sampling_figures(arch: DDPMArch, image: tuple[int, int], sizes: BenchSizes, device: torch.device,
                      peak: Peak, phases: Phases) -> SampleFigures:
    """DDIM (median of `repeats`), then DDPM over all T steps (once: T steps already average), same weights; DDPM
    says how far it is every tenth of its steps."""
    ddpm, ddim = DiffusionSampling(sampler="ddpm"), DiffusionSampling(sampler="ddim", sample_steps=sizes.ddim_steps)
    model = _model(arch, image, device)
    flops = sampling_step_flops(model, sizes.sample_n, device)
    ddpm_steps, ddim_steps = ddpm.network_evaluations(arch), ddim.network_evaluations(arch)

    def draw(sampling: DiffusionSampling) -> Callable[[], np.ndarray]:
        return lambda: draw_images(model, range(sizes.sample_n), 0, sampling)

    def time_ddim() -> Rate:
        for _ in range(min(sizes.warmup, 1)):
            draw(ddim)()  # the same network as DDPM's: one run warms both
        seconds, _ = timed(draw(ddim), device, sizes.repeats, 0)
        return _rate(seconds, sizes.sample_n, peak, flops * ddim_steps)

    def time_ddpm() -> Rate:
        with counted_steps(model, max(1, ddpm_steps // 10), lambda done, seconds: phases.tell(
                f"  DDPM {done}/{ddpm_steps} steps, {seconds:.0f} s, about "
                f"{seconds * (ddpm_steps - done) / done:.0f} s left")):
            seconds, _ = timed(draw(ddpm), device, 1, 0)
        return _rate(seconds, sizes.sample_n, peak, flops * ddpm_steps)

    images = f"{sizes.sample_n} image{'s' * (sizes.sample_n > 1)}"
    with torch.inference_mode():
        fast = phases.run("sample_ddim", f"sampling, DDIM {ddim_steps} steps ({images}, median of {sizes.repeats})",
                          time_ddim, said)
        expected = fast.seconds * ddpm_steps / ddim_steps
        slow = phases.run("sample_ddpm", f"sampling, DDPM ancestral over {ddpm_steps} steps ({images}, about "
                                         f"{expected:.0f} s at DDIM's rate)", time_ddpm, said)
    return SampleFigures(flops_per_step=flops, ddpm_steps=ddpm_steps, ddim_steps=ddim_steps, ddpm=slow, ddim=fast,
                         speedup=fast.images_per_s / slow.images_per_s)


@contextmanager
def counted_steps(model: DDPM, every: int, report: Callable[[int, float], None]) -> Iterator[None]:
    """Inside the block, `report(evaluations, seconds)` after every `every`-th network evaluation of `model`: progress
    from within a sampler, which has no hook for it, by wrapping the noise predictor the samplers ask the model for
    (an instance attribute over the method, removed after the block). It draws no random numbers and adds no device
    sync, so the samples and their timing are what they are without it."""
    predictor = model.noise_predictor
    done = 0
    started = time.perf_counter()

    def counting(labels: torch.Tensor | None, guidance_scale: float = 1.0) -> Callable[..., torch.Tensor]:
        eps = predictor(labels, guidance_scale)

        def evaluate(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            nonlocal done
            out = eps(x, t)
            done += 1
            if done % every == 0:
                report(done, time.perf_counter() - started)
            return out

        return evaluate

    model.noise_predictor = counting  # type: ignore[method-assign]
    try:
        yield
    finally:
        del model.noise_predictor


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


def sampling_step_flops(model: DDPM, n: int, device: torch.device) -> int:
    """FLOPs of one network evaluation over n images, as the samplers call it (eval mode, no gradients)."""
    channels, size, _ = model.diffusion_shape
    labels = image_labels(range(n), model.num_classes)
    eps = model.noise_predictor(None if labels is None else labels.to(device))
    x, t = torch.zeros(n, channels, size, size, device=device), torch.zeros(n, dtype=torch.long, device=device)
    with torch.no_grad(), eval_mode(model):
        return count_flops(lambda: eps(x, t))


def _feature_figures(image: tuple[int, int], sizes: BenchSizes, device: torch.device, native: bool,
                     phases: Phases) -> FeatureFigures:
    """Ours (fp32, and bf16 where `native`) and the peer on the same random uint8 images."""
    channels, size = image
    images = np.random.default_rng(0).integers(0, 256, (sizes.feature_n, size, size, channels), dtype=np.uint8)
    features: dict[str, np.ndarray] = {}
    work = f"{sizes.feature_n} images by {sizes.feature_batch}, median of {sizes.repeats}"

    def run(key: str, title: str, extract: Callable[[np.ndarray], np.ndarray]) -> Rate:
        def measure() -> Rate:
            seconds, features[key] = timed(lambda: extract(images), device, sizes.repeats, sizes.warmup)
            return Rate(seconds=seconds, images_per_s=sizes.feature_n / seconds)

        return phases.run(key, f"FID features, {title} ({work})", measure, said)

    def ours(precision: str) -> Callable[[np.ndarray], np.ndarray]:
        return lambda batch: extract_features(batch, sizes.feature_batch, str(device), precision)

    ours_fp32 = run("features_ours_fp32", "ours fp32", ours("fp32"))
    ours_bf16 = None
    if native:
        ours_bf16 = run("features_ours_bf16", "ours bf16", ours("bf16"))
    else:
        phases.skip("features_ours_bf16", "FID features, ours bf16", BF16_EMULATED)
    if not fidelity_peer.installed():
        phases.skip("features_peer", "FID features, torch-fidelity's layout (the peer)",
                    f"torch-fidelity is not installed ({fidelity_peer.INSTALL_HINT})")
        return FeatureFigures(peer=None, ours_fp32=ours_fp32, ours_bf16=ours_bf16, speedup_fp32=None,
                              speedup_bf16=None, difference=None)
    peer = run("features_peer", "torch-fidelity's layout (the peer)",
               fidelity_peer.peer_extractor(sizes.feature_batch, device))
    exact, reference = features["features_ours_fp32"], features["features_peer"]
    return FeatureFigures(
        peer=peer, ours_fp32=ours_fp32, ours_bf16=ours_bf16,
        speedup_fp32=ours_fp32.images_per_s / peer.images_per_s,
        speedup_bf16=None if ours_bf16 is None else ours_bf16.images_per_s / peer.images_per_s,
        difference=float(np.linalg.norm(exact - reference) / np.linalg.norm(reference)),
    )  # fmt: skip
