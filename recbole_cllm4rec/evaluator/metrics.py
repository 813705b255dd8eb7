"""Extra RecBole metrics used by the CLLM4Rec paper.

RecBole builds its metric tables once, at import time, from the classes defined in
``recbole.evaluator.metrics``; a metric defined anywhere else is unknown to ``Config`` and the
evaluator until :func:`register_metrics` adds it to those tables.
"""

import numpy as np
from recbole.evaluator.base_metric import TopkMetric


class TRecall(TopkMetric):
    r"""Truncated recall, the Recall@K of Multi-VAE and CLLM4Rec.

    .. math::
        \mathrm{TRecall@K} = \frac{1}{|U|}\sum_{u \in U}
        \frac{|\hat{R}_K(u) \cap R(u)|}{\min(K, |R(u)|)}

    RecBole's ``Recall`` divides by :math:`|R(u)|`, so a user with more test items than K can never
    reach 1; the truncated denominator makes a perfect top-K list score 1 for every user.
    """

    def calculate_metric(self, dataobject):
        pos_index, pos_len = self.used_info(dataobject)
        result = self.metric_info(pos_index, pos_len)
        return self.topk_result("trecall", result)

    def metric_info(self, pos_index, pos_len):
        hits = np.cumsum(pos_index, axis=1)
        cutoffs = np.arange(1, pos_index.shape[1] + 1)
        denominator = np.minimum(cutoffs[None, :], pos_len.reshape(-1, 1))
        # A user without positives cannot occur in RecBole's full ranking; guard the division anyway.
        return hits / np.maximum(denominator, 1)


EXTRA_METRICS = (TRecall,)


def register_metrics():
    """Make the metrics of this module usable by name in RecBole configs (``metrics: [TRecall]``).

    ``Config`` validates metric names against ``recbole.evaluator.register.metric_types`` and the
    evaluator instantiates them from ``metrics_dict``; other modules import these same dict
    objects, so updating them in place is enough. Safe to call more than once.
    """
    from recbole.evaluator import register

    for metric_cls in EXTRA_METRICS:
        name = metric_cls.__name__.lower()
        register.metrics_dict[name] = metric_cls
        register.metric_information[name] = metric_cls.metric_need
        register.metric_types[name] = metric_cls.metric_type
        if metric_cls.smaller and name not in register.smaller_metrics:
            register.smaller_metrics.append(name)
