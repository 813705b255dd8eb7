from recbole_cllm4rec.evaluator.metrics import TRecall, register_metrics

__all__ = ["TRecall", "register_metrics"]
