"""A model's life after training: MLflow tracking and registry, drift, the retraining decisions."""
