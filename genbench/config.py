"""`params.yaml` → validated, profile-resolved configuration.

Any mapping in `params.yaml` may carry a `profiles:` block whose `tiny` / `quick` / `full` entry is deep-merged
over its siblings when that profile is active. Overrides sit beside the values they change, so DVC stages can
depend on `models.ddpm` alone and editing DDPM settings never retrains the VAE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Profile = Literal["tiny", "quick", "full"]
PROFILES: tuple[str, ...] = ("tiny", "quick", "full")
Family = Literal["vae", "dcgan", "wgan_gp", "wgan", "vae_gan", "ddpm", "ldm"]

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class ConfigError(ValueError):
    """Bad parameters: the message names each offending field and what is allowed."""


class Strict(BaseModel):
    """Unknown keys are errors: a typo must never silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Strict):
    dataset: Literal["fashion_mnist", "mnist", "cifar10"] = "fashion_mnist"  # 1×28×28, 1×28×28, 3×32×32
    train_size: PositiveInt = 60000  # training images taken from the train split (seeded subset)
    reference_size: PositiveInt = 10000  # held-out real images from the test split that metrics compare against


class TrainConfig(Strict):
    steps: PositiveInt = 1000  # optimizer steps per group
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 2e-4  # Adam learning rate, shared by every optimizer group
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    log_every: PositiveInt = 25  # steps between rows in history.csv
    checkpoint_every: PositiveInt = 500  # steps between resumable checkpoints
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when available
    # autocast dtype of the forward passes; fp16 adds a loss scaler per optimizer group (saved in checkpoints)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.999  # EMA of the sampled weights; 0 = last iterate
    fid_every: Annotated[int, Field(ge=0)] = 0  # steps between FID-curve points (EMA weights); 0 = no curve
    fid_n: Annotated[int, Field(ge=6)] = 100  # images per FID-curve point (small N: a trend, not a result)


class VAEArch(Strict):
    latent_dim: PositiveInt = 16
    base_channels: PositiveInt = 32
    beta: Annotated[float, Field(ge=0)] = 1.0  # weight of the KL term (beta-VAE)


class DCGANArch(Strict):
    latent_dim: PositiveInt = 64
    base_channels: PositiveInt = 64


class WGANGPArch(Strict):
    latent_dim: PositiveInt = 64
    base_channels: PositiveInt = 64
    n_critic: PositiveInt = 5  # critic updates per generator update
    gp_weight: PositiveFloat = 10.0  # lambda of the gradient penalty


class WGANArch(Strict):
    latent_dim: PositiveInt = 64
    base_channels: PositiveInt = 64
    n_critic: PositiveInt = 5  # critic updates per generator update
    clip: PositiveFloat = 0.01  # critic weights are clipped to [-clip, clip]


class VAEGANArch(Strict):
    latent_dim: PositiveInt = 64
    base_channels: PositiveInt = 64
    beta: Annotated[float, Field(ge=0)] = 1.0  # weight of the KL term in the encoder's loss
    gamma: Annotated[float, Field(ge=0)] = 1e-2  # weight of feature reconstruction against the GAN term (decoder)


class DDPMArch(Strict):
    base_channels: PositiveInt = 32
    channel_mults: tuple[PositiveInt, ...] = (1, 2, 2)  # UNet width per resolution level
    timesteps: Annotated[int, Field(ge=2)] = 1000  # diffusion steps T (training and sampling)
    schedule: Literal["linear", "cosine"] = "linear"
    prediction: Literal["eps", "v"] = "eps"  # what the UNet predicts: the noise or the velocity
    num_classes: Annotated[int, Field(ge=0)] = 0  # classes to condition on; 0 = unconditional
    cond_drop_prob: Annotated[float, Field(ge=0, le=1)] = 0.1  # share of labels dropped to train the CFG branch


class LDMArch(DDPMArch):
    vae_run: str = "runs/vae"  # the trained vae run whose frozen encoder/decoder the diffusion works through
    latent_shape: tuple[PositiveInt, PositiveInt, PositiveInt] = (1, 4, 4)  # vae latent viewed as C×H×W


class SamplingConfig(Strict):
    ema: bool = True  # sample from the EMA weights (else the last iterate)


class DiffusionSampling(SamplingConfig):
    sampler: Literal["ddpm", "ddim"] = "ddpm"  # ancestral over all T, or DDIM over sample_steps
    sample_steps: PositiveInt = 50  # DDIM steps (<= timesteps); ignored by the ddpm sampler
    eta: Annotated[float, Field(ge=0, le=1)] = 0.0  # DDIM noise: 0 deterministic, 1 DDPM-like
    guidance_scale: Annotated[float, Field(ge=0)] = 1.0  # CFG: 0 unconditional, 1 conditional, >1 guided


class VAEConfig(Strict):
    arch: VAEArch = VAEArch()
    train: TrainConfig = TrainConfig(lr=1e-3)
    sampling: SamplingConfig = SamplingConfig()


class DCGANConfig(Strict):
    arch: DCGANArch = DCGANArch()
    train: TrainConfig = TrainConfig(betas=(0.5, 0.999))
    sampling: SamplingConfig = SamplingConfig()


class WGANGPConfig(Strict):
    arch: WGANGPArch = WGANGPArch()
    train: TrainConfig = TrainConfig(lr=1e-4, betas=(0.5, 0.9))  # Gulrajani et al.
    sampling: SamplingConfig = SamplingConfig()


class WGANConfig(Strict):
    arch: WGANArch = WGANArch()
    train: TrainConfig = TrainConfig(lr=5e-5, betas=(0.5, 0.9))
    sampling: SamplingConfig = SamplingConfig()


class VAEGANConfig(Strict):
    arch: VAEGANArch = VAEGANArch()
    train: TrainConfig = TrainConfig(betas=(0.5, 0.999))
    sampling: SamplingConfig = SamplingConfig()


class DDPMConfig(Strict):
    arch: DDPMArch = DDPMArch()
    train: TrainConfig = TrainConfig()
    sampling: DiffusionSampling = DiffusionSampling()

    @model_validator(mode="after")
    def _sampler_fits(self) -> DDPMConfig:
        if self.sampling.sampler == "ddim" and self.sampling.sample_steps > self.arch.timesteps:
            raise ValueError(f"sampling.sample_steps={self.sampling.sample_steps} exceeds arch.timesteps="
                             f"{self.arch.timesteps}")
        if self.sampling.guidance_scale != 1.0 and not self.arch.num_classes:
            raise ValueError("sampling.guidance_scale needs a class-conditional model (arch.num_classes > 0)")
        return self


class LDMConfig(DDPMConfig):
    arch: LDMArch = LDMArch()


FamilyConfig = VAEConfig | DCGANConfig | WGANGPConfig | WGANConfig | VAEGANConfig | DDPMConfig | LDMConfig


class ModelsConfig(Strict):
    vae: VAEConfig = VAEConfig()
    dcgan: DCGANConfig = DCGANConfig()
    wgan_gp: WGANGPConfig = WGANGPConfig()
    wgan: WGANConfig = WGANConfig()
    vae_gan: VAEGANConfig = VAEGANConfig()
    ddpm: DDPMConfig = DDPMConfig()
    ldm: LDMConfig = LDMConfig()


class SampleConfig(Strict):
    n: PositiveInt = 10000  # images per family
    batch_size: PositiveInt = 250


class EvaluateConfig(Strict):
    batch_size: PositiveInt = 50  # images per Inception forward pass
    k: PositiveInt = 3  # neighbourhood size of improved precision/recall
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where the Inception network runs


class Config(Strict):
    profile: Profile = "quick"  # tiny: tests (seconds); quick: README run (CPU minutes); full: GPU
    seed: Annotated[int, Field(ge=0)] = 0  # one seed fixes data split, init, training order and samples
    families: tuple[Family, ...] = ("vae", "dcgan", "ddpm")  # what `genbench run` trains
    data: DataConfig = DataConfig()
    models: ModelsConfig = ModelsConfig()
    sample: SampleConfig = SampleConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

    @model_validator(mode="after")
    def _families_unique(self) -> Config:
        if len(set(self.families)) != len(self.families):
            raise ValueError(f"families lists a family twice: {list(self.families)}")
        if "ldm" in self.families and self.models.ldm.arch.vae_run == "runs/vae" and (
            "vae" not in self.families or self.families.index("vae") > self.families.index("ldm")
        ):
            raise ValueError("families: ldm trains on runs/vae, so vae must be listed before it")
        return self

    def family(self, name: str) -> FamilyConfig:
        """The resolved settings of one model family."""
        return getattr(self.models, name)

    def stage_record(self, family: str | None = None) -> dict[str, Any]:
        """The resolved config a stage writes beside its outputs (only what that stage depends on)."""
        record: dict[str, Any] = {"profile": self.profile, "seed": self.seed, "data": self.data.model_dump()}
        if family is not None:
            record["family"] = family
            record |= self.family(family).model_dump(mode="json")
        return record


def load_config(path: Path | str = "params.yaml", profile: str | None = None) -> Config:
    """Parse, resolve profiles and validate; raises ConfigError naming every bad field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; run from the project folder or pass --params PATH") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    active = profile or raw.get("profile", "quick")
    if active not in PROFILES:
        raise ConfigError(f"{path}: profile: {active!r} is not a profile; allowed: {', '.join(PROFILES)}")
    raw["profile"] = active
    origins: dict[tuple[str, ...], tuple[str, ...]] = {}
    resolved = _resolve_profiles(raw, active, (), origins, path)
    try:
        return Config.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origins, path)) from None


def _resolve_profiles(
    node: Any, profile: str, here: tuple[str, ...], origins: dict[tuple[str, ...], tuple[str, ...]], path: Path
) -> Any:
    """Deep-merge each mapping's `profiles[profile]` over it, remembering where overridden values came from."""
    if not isinstance(node, dict):
        return node
    node = dict(node)
    overrides = node.pop("profiles", None) or {}
    if not isinstance(overrides, dict) or not set(overrides) <= set(PROFILES):
        where = ".".join((*here, "profiles"))
        raise ConfigError(f"{path}: {where}: must map profile names ({', '.join(PROFILES)}) to overrides")
    chosen = overrides.get(profile) or {}
    if not isinstance(chosen, dict):
        raise ConfigError(f"{path}: {'.'.join((*here, 'profiles', profile))}: must be a mapping of overrides")
    merged = _deep_merge(node, chosen, here, (*here, "profiles", profile), origins)
    return {key: _resolve_profiles(value, profile, (*here, key), origins, path) for key, value in merged.items()}


def _deep_merge(
    base: dict[str, Any],
    override: dict[str, Any],
    here: tuple[str, ...],
    source: tuple[str, ...],
    origins: dict[tuple[str, ...], tuple[str, ...]],
) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value, (*here, key), (*source, key), origins)
        else:
            merged[key] = value
            origins[(*here, key)] = (*source, key)
    return merged


def _describe(exc: ValidationError, origins: dict[tuple[str, ...], tuple[str, ...]], path: Path) -> str:
    lines = [f"{path}: {exc.error_count()} invalid parameter(s):"]
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        shown = next((origins[loc[:i]] + loc[i:] for i in range(len(loc), 0, -1) if loc[:i] in origins), loc)
        field = ".".join(shown) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key; remove it or fix its spelling (see the defaults in genbench/config.py)"
        elif "input" in error and not isinstance(error["input"], dict):
            message += f" (got {error['input']!r})"
        lines.append(f"  {field}: {message}")
    lines.append("Nothing was written. Fix params.yaml and run again.")
    return "\n".join(lines)
