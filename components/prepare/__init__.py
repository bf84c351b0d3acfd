"""The prepare stage: the dataset split into train, validation, reference and holdout images."""
