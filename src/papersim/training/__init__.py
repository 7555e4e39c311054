"""Learning from the corpus: Siamese pairs and hard negatives, fine-tuning, choosing what is served."""
