"""The FID network rebuilt from two files small enough to travel to a machine that takes little per transfer (the
lent GPU machine takes 64 MiB a call, less than the network's TorchScript file alone): the same TorchScript with
every tensor zeroed (xz-compressed) and every tensor rounded to float16 (shared/data/README.md, "A copy small enough
for the GPU machine").

`rebuild` joins them into a TorchScript file that `inception.locate_weights` finds through GENBENCH_FID_WEIGHTS. Its
weights are the exact network's rounded to float16, so its sha256 differs from the standard file's and every record
it scores names it; the README gives how far its FID lies from the exact network's.
"""

from __future__ import annotations

import lzma
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from genbench.components.evaluate.inception import WEIGHTS_FILENAME, load_scripted

ARCH_FILE = WEIGHTS_FILENAME.replace(".torchscript.pt", ".arch-only.torchscript.pt.xz")
WEIGHTS_FILE = WEIGHTS_FILENAME.replace(".torchscript.pt", ".fp16-weights.pt")
REBUILT_FILE = WEIGHTS_FILENAME.replace(".torchscript.pt", ".fp16-rebuilt.torchscript.pt")


def rebuild(kit: Path, out_dir: Path) -> Path:
    """The network rebuilt from folder `kit` (ARCH_FILE and WEIGHTS_FILE, as shared/data/fid holds them) into
    out_dir/REBUILT_FILE, written atomically; an existing one is reused. FileNotFoundError names a missing piece,
    ValueError a weights file that does not fit the architecture."""
    out = Path(out_dir) / REBUILT_FILE
    if out.is_file():
        return out
    pieces = [Path(kit) / ARCH_FILE, Path(kit) / WEIGHTS_FILE]
    for piece in pieces:
        if not piece.is_file():
            raise FileNotFoundError(f"{piece}: missing; --fid-kit names a folder holding {ARCH_FILE} and "
                                    f"{WEIGHTS_FILE} (copy them from $GENBENCH_DATA_DIR/fid)")
    with tempfile.TemporaryDirectory() as folder:
        architecture = Path(folder) / WEIGHTS_FILENAME
        with lzma.open(pieces[0]) as packed, open(architecture, "wb") as unpacked:
            shutil.copyfileobj(packed, unpacked)
        network = load_scripted(architecture)
    weights = torch.load(pieces[1], map_location="cpu", weights_only=True)
    tensors = dict(network.named_parameters()) | dict(network.named_buffers())
    if set(weights) != set(tensors):
        raise ValueError(f"{pieces[1]}: its tensors are not the network's ({len(weights)} against {len(tensors)}); "
                         "copy both files from the same $GENBENCH_DATA_DIR/fid")
    with torch.no_grad():
        for name, tensor in tensors.items():
            tensor.copy_(weights[name].to(tensor.dtype))  # a shape mismatch raises here
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as folder, warnings.catch_warnings():
        # torch.jit.save names the archive's folder after the file: saved under its final name, two rebuilds are
        # byte for byte the same (and so is the sha256 records name), and the rename publishes it whole
        warnings.filterwarnings("ignore", message=".*torch.jit.save.*deprecated", category=FutureWarning)
        staged = Path(folder) / REBUILT_FILE
        torch.jit.save(network, str(staged))
        os.replace(staged, out)
    return out
