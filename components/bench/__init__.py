"""`genbench bench`: training, sampling and FID-feature speed side by side, FLOPs, MFU, and `genbench models`."""
