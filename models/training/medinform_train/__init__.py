"""MedInform training pipeline: datasets, training, export, model cards, parity references."""
