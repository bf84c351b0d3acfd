"""The train stage: the training loop, EMA, optimizers, DDP and the FID curve."""
