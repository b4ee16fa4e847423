"""The modeling layer: models, training on Ray Train, evaluation, tuning, tracking and the registry."""
