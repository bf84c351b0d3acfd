"""The sample stage: a trained model's images into one .npy with its record."""
