"""Trainers of this package's models, found by name (``<Model>Trainer``) by ``registry.get_trainer``."""

from recbole_cllm4rec.trainer.cllm4rec_trainer import CLLM4RecTrainer

__all__ = ["CLLM4RecTrainer"]
