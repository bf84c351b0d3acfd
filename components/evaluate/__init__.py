"""The evaluate stages: the FID network, its features and every metric of a set of images."""
