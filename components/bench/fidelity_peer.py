"""torch-fidelity's layout of our FID network: the side-by-side peer that `genbench bench` times ours against.

torch-fidelity's `FeatureExtractorInceptionV3` is the same TF Inception written as eager NCHW modules, where
ours is NVIDIA's TorchScript export rebuilt with BatchNorm folded and run channels_last (`inception_net`).
Its own weights download on first use (which fails offline), so the peer is built empty and each of its 94
`BasicConv2d` blocks takes, in order, one TorchScript convolution's (weight, beta, mean, var), with BatchNorm's
scale 1 as in TF's graph (the two map one to one: ../shared/data/README.md). Both then compute the same
function, and the bench records how far their features differ. Its 1008-class head, which the pool3 network
lacks, stays random and unused.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from genbench.components.evaluate.inception import NUM_FEATURES, load_scripted, locate_weights

INSTALL_HINT = "`uv run --group bench genbench bench` installs it"

Extractor = Callable[[np.ndarray], np.ndarray]


def installed() -> bool:
    """Whether torch-fidelity can be imported (it is in the `bench` dependency group, not the default one)."""
    return importlib.util.find_spec("torch_fidelity") is not None


def peer_network(device: torch.device) -> torch.nn.Module:
    """torch-fidelity's InceptionV3 (eager, NCHW, fp32) holding our network's weights; returns pool3 features
    of uint8 NCHW RGB images, resizing the TF1 way itself."""
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d, FeatureExtractorInceptionV3

    class Blank(FeatureExtractorInceptionV3):
        """Built without weights: the constructor's own load is skipped, ours are copied in below."""

        def load_state_dict(self, *_: object, **__: object) -> None:
            pass

    scripted = dict(load_scripted(locate_weights()).named_parameters())
    convs = [name[: -len(".weight")] for name in scripted if name.endswith(".weight")]
    with tempfile.TemporaryDirectory() as folder:
        empty = Path(folder) / "empty.pth"
        torch.save({}, empty)  # the constructor reads the file it is given
        network = Blank("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    blocks = [module for module in network.modules() if isinstance(module, BasicConv2d)]
    if len(blocks) != len(convs):
        raise RuntimeError(f"{len(blocks)} BasicConv2d blocks against {len(convs)} TorchScript convolutions")
    with torch.no_grad():
        for block, conv in zip(blocks, convs):
            block.conv.weight.copy_(scripted[f"{conv}.weight"])  # a shape mismatch raises here
            block.bn.weight.fill_(1.0)
            block.bn.bias.copy_(scripted[f"{conv}.beta"])
            block.bn.running_mean.copy_(scripted[f"{conv}.mean"])
            block.bn.running_var.copy_(scripted[f"{conv}.var"])
    return network.eval().to(device)


def peer_extractor(batch_size: int, device: torch.device) -> Extractor:
    """uint8 NHWC images → [N, 2048] float64 features through the peer, batch by batch as
    `inception.extract_features` goes (same host-device copies), so the two are timed on equal terms."""
    network = peer_network(device)

    def extract(images: np.ndarray) -> np.ndarray:
        features = np.empty((len(images), NUM_FEATURES), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = torch.from_numpy(np.array(images[start : start + batch_size])).to(device).permute(0, 3, 1, 2)
                if batch.shape[1] == 1:
                    batch = batch.repeat(1, 3, 1, 1)
                features[start : start + len(batch)] = network(batch)[0].double().cpu().numpy()
        return features

    return extract
