"""Training: the network loop (finetune, scratch) and headless featurizer + classic ML head."""
