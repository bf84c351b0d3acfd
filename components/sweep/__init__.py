"""The sweep stage: one trained model re-sampled and scored once per value of a sampling setting."""
