"""Trainers of this package's models (``<Model>Trainer``), and ``get_trainer``, which finds one by
model name and falls back to RecBole's (as RecBole-GNN's ``get_trainer`` does)."""

from recbole_cllm4rec.checkpoint import reliable
from recbole_cllm4rec.trainer.cllm4rec_trainer import CLLM4RecTrainer

__all__ = ["CLLM4RecTrainer", "get_trainer", "our_trainer"]


def our_trainer(name):
    """``<name>Trainer`` of this package, or None (RecBole's trainer applies)."""
    return globals().get(f"{name}Trainer")


def get_trainer(model_type, name):
    """The model's trainer with ``checkpoint.CheckpointMixin``: unique, atomic, identified,
    safely loaded checkpoints and a last-state checkpoint per epoch, for RecBole's models too."""
    trainer = our_trainer(name)
    if trainer is None:
        from recbole.utils import get_trainer as recbole_get_trainer

        trainer = recbole_get_trainer(model_type, name)
    return reliable(trainer)
