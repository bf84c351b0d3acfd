"""genbench: reproducible training, sampling and evaluation of image generative models (README.md)."""
