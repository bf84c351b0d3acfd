"""The FID peer of `genbench bench` computes our features: torch-fidelity's layout with our weights copied in
(components/bench/fidelity_peer.py) gives, on real images, what `inception.extract_features` gives.

A script, not a test: torch-fidelity is in the `bench` dependency group only (installed, it also turns on
Inception Score, whose weights download on first use, in every evaluate), so the suite never has it. Run it where
the bench runs, before trusting the bench's peer column (GENBENCH_DATA_DIR as for the tests):

    uv run --group bench python -m tests.bench_peer

Exit 0 when the features agree, 1 when they do not, 2 without torch-fidelity. `uv run` leaves torch-fidelity in
the environment; `uv sync` removes it before the suite runs again.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from genbench.components.bench import fidelity_peer
from genbench.components.evaluate.inception import DATA_DIR_ENV, extract_features
from tests.conftest import REPO
from tests.stages.conftest import fashion_test_split

TOLERANCE = 1e-4  # relative norm of the difference: float32 rounding over a deep network, not another function


def main() -> int:
    if not fidelity_peer.installed():
        print(f"torch-fidelity is not installed: {fidelity_peer.INSTALL_HINT}", file=sys.stderr)
        return 2
    os.environ.setdefault(DATA_DIR_ENV, str(REPO.parent / "shared" / "data"))
    images = fashion_test_split(1)
    ours = extract_features(images, batch_size=1)
    peer = fidelity_peer.peer_extractor(1, torch.device("cpu"))(images)
    difference = float(np.linalg.norm(peer - ours) / np.linalg.norm(ours))
    agree = peer.shape == ours.shape == (len(images), 2048) and difference < TOLERANCE
    print(f"peer {peer.shape} against ours {ours.shape}: relative difference {difference:.2e} "
          f"({'agree' if agree else 'DIFFER'}, tolerance {TOLERANCE:g})")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
