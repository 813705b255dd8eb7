"""TRecall (truncated recall) against hand-computed values, alone and through RecBole's evaluator."""

import sys

import numpy as np
import pytest
import torch

import recbole_cllm4rec  # noqa: F401  (applies the RecBole compatibility patches)
from recbole_cllm4rec.evaluator import TRecall, register_metrics

# Two users, top-5 lists. 1 marks a test item at that rank; the last column is |test items|.
#   user 0: hits at ranks 1 and 3, 2 test items
#   user 1: hits at ranks 2, 3, 4, 10 test items
TOPK_MATRIX = torch.tensor(
    [
        [1, 0, 1, 0, 0, 2],
        [0, 1, 1, 1, 0, 10],
    ]
)

# TRecall@K = hits in top K / min(K, |T|), worked out by hand:
#   user 0: K=1: 1/1  K=2: 1/2  K=3: 2/2  K=5: 2/2
#   user 1: K=1: 0/1  K=2: 1/2  K=3: 2/3  K=5: 3/5
HAND_TRECALL = {1: (1.0 + 0.0) / 2, 2: (0.5 + 0.5) / 2, 3: (1.0 + 2 / 3) / 2, 5: (1.0 + 0.6) / 2}
# RecBole's Recall@K = hits in top K / |T|:
#   user 0: 1/2, 1/2, 2/2, 2/2    user 1: 0/10, 1/10, 2/10, 3/10
HAND_RECALL = {1: (0.5 + 0.0) / 2, 2: (0.5 + 0.1) / 2, 3: (1.0 + 0.2) / 2, 5: (1.0 + 0.3) / 2}


class _Data:
    """The one entry of RecBole's DataStruct that top-k metrics read."""

    def __init__(self, matrix):
        self.matrix = matrix

    def get(self, key):
        assert key == "rec.topk"
        return self.matrix


def test_trecall_matches_hand_computed_values():
    metric = TRecall({"topk": [1, 2, 3, 5], "metric_decimal_place": 6})
    result = metric.calculate_metric(_Data(TOPK_MATRIX))
    for k, expected in HAND_TRECALL.items():
        assert result[f"trecall@{k}"] == pytest.approx(expected, abs=1e-6)


def test_trecall_reaches_one_when_top_k_is_all_hits():
    # 3 test items, all ranked first: TRecall is 1 at every K; Recall@1 would be 1/3.
    metric = TRecall({"topk": [1, 2, 3], "metric_decimal_place": 4})
    result = metric.calculate_metric(_Data(torch.tensor([[1, 1, 1, 3]])))
    assert result == {"trecall@1": 1.0, "trecall@2": 1.0, "trecall@3": 1.0}


@pytest.fixture
def config(monkeypatch):
    from recbole.config import Config

    register_metrics()
    register_metrics()  # a second call must be harmless
    monkeypatch.setattr(sys, "argv", sys.argv[:1])  # RecBole's Config would parse pytest's flags
    return Config(
        model="Pop",
        dataset="amazon-sample",
        config_file_list=["properties/dataset/amazon-sample.yaml"],
        config_dict={"metrics": ["Recall", "TRecall", "NDCG"], "topk": [1, 2, 3, 5], "metric_decimal_place": 6},
    )


def test_registered_metric_is_computed_by_recbole_evaluator(config):
    from recbole.evaluator import Evaluator
    from recbole.evaluator.collector import DataStruct

    assert config["valid_metric_bigger"]
    data = DataStruct()
    data.set("rec.topk", TOPK_MATRIX)
    result = Evaluator(config).evaluate(data)
    for k in HAND_TRECALL:
        assert result[f"trecall@{k}"] == pytest.approx(HAND_TRECALL[k], abs=1e-6)
        assert result[f"recall@{k}"] == pytest.approx(HAND_RECALL[k], abs=1e-6)
        assert f"ndcg@{k}" in result


def test_unregistered_name_is_still_rejected(config):
    from recbole.config import Config

    with pytest.raises(NotImplementedError, match="no metric named 'TRecal'"):
        Config(
            model="Pop",
            dataset="amazon-sample",
            config_file_list=["properties/dataset/amazon-sample.yaml"],
            config_dict={"metrics": ["TRecal"]},
        )


def test_trecall_equals_recall_when_test_sets_fit_in_k():
    rng = np.random.default_rng(0)
    hits = rng.random((50, 20)) < 0.2
    pos_len = np.maximum(hits.sum(axis=1), 1)
    truncated = TRecall({"topk": [20], "metric_decimal_place": 4}).metric_info(hits, pos_len)
    # At K=20 no user has more than 20 test items here, so both denominators are |T|.
    np.testing.assert_allclose(truncated[:, -1], hits.sum(axis=1) / pos_len)
