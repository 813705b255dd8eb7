"""Cold-start protocols (recbole_cllm4rec/coldstart.py): the splits, the candidate mask, and
what each model does with an item or user that has no training interaction."""

import os

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

import recbole_cllm4rec
from conftest import ROOT, TINY_CLLM4REC
from recbole_cllm4rec.quick_start import build_config
from recbole_cllm4rec.validation import InputError

COLD_ITEM = os.path.join(ROOT, "properties", "protocol", "ml-100k-cold-item.yaml")
COLD_USER = os.path.join(ROOT, "properties", "protocol", "ml-100k-cold-user.yaml")
SPARSE_ITEM = os.path.join(ROOT, "properties", "protocol", "ml-100k-sparse-item.yaml")
QUIET = {"state": "WARNING", "show_progress": False}


def split(model, protocol, **overrides):
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    config = build_config(model, "ml-100k", [protocol], dict(QUIET, **overrides))
    init_seed(config["seed"], True)
    dataset = create_dataset(config)
    return config, dataset, data_preparation(config, dataset)


def pairs(dataset, part):
    """(user token, item token) pairs of a split, as in the atomic file."""
    feat = part.inter_feat
    users = dataset.id2token(dataset.uid_field, feat[dataset.uid_field].numpy())
    items = dataset.id2token(dataset.iid_field, feat[dataset.iid_field].numpy())
    return list(zip(users.tolist(), items.tolist()))


def atomic_pairs(config):
    path = os.path.join(config["data_path"], "ml-100k.inter")
    with open(path, encoding="utf-8") as f:
        next(f)
        return [tuple(line.split("\t")[:2]) for line in f if line.strip()]


@pytest.fixture(scope="module")
def cold_item_split():
    return split("Pop", COLD_ITEM)


def test_cold_items_never_reach_training_or_validation(cold_item_split):
    config, dataset, (train, valid, test) = cold_item_split
    cold = set(dataset.id2token(dataset.iid_field, np.flatnonzero(test._dataset.candidate_items.numpy())).tolist())
    atomic = atomic_pairs(config)
    # about a fifth of the catalogue, and every atomic interaction of a cold item is in test
    items = {i for _, i in atomic}
    assert abs(len(cold) - 0.2 * len(items)) <= 1
    assert sorted(p for p in atomic if p[1] in cold) == sorted(pairs(dataset, test._dataset))
    for part in (train, valid):
        assert not {i for _, i in pairs(dataset, part._dataset)} & cold
    # the warm interactions are all in train or valid, none lost
    assert len(train._dataset) + len(valid._dataset) + len(test._dataset) == len(atomic)
    # the cold items' text stays loaded
    from recbole_cllm4rec.data.text import entity_texts

    texts = entity_texts(train._dataset, "item", config["item_text"])
    assert all(texts[i] for i in np.flatnonzero(test._dataset.candidate_items.numpy()))


def test_cold_item_split_is_reproducible_from_the_seed(cold_item_split):
    config, dataset, (train, _, test) = cold_item_split
    _, again, (train2, _, test2) = split("Pop", COLD_ITEM)
    assert torch.equal(test._dataset.candidate_items, test2._dataset.candidate_items)
    assert sorted(pairs(dataset, train._dataset)) == sorted(pairs(again, train2._dataset))
    _, _, (_, _, other) = split("Pop", COLD_ITEM, seed=7)
    assert not torch.equal(test._dataset.candidate_items, other._dataset.candidate_items)


def test_cold_user_split_keeps_at_most_five_and_is_reproducible():
    config, dataset, (train, valid, test) = split("Pop", COLD_USER)
    atomic = atomic_pairs(config)
    counts = np.bincount(train._dataset.inter_feat["user_id"].numpy(), minlength=dataset.user_num)
    valid_users = set(valid._dataset.inter_feat["user_id"].numpy().tolist())
    cold = np.flatnonzero((counts <= 5) & (np.arange(dataset.user_num) > 0))
    assert abs(len(cold) - 0.2 * (dataset.user_num - 1)) <= 1  # ml-100k users all have 20+ ratings
    assert not valid_users & set(cold.tolist())
    assert set(counts[cold].tolist()) == {0, 1, 2, 3, 4, 5}
    assert len(train._dataset) + len(valid._dataset) + len(test._dataset) == len(atomic)
    _, again, (train2, _, _) = split("Pop", COLD_USER)
    assert sorted(pairs(dataset, train._dataset)) == sorted(pairs(again, train2._dataset))


def test_sparse_item_split_keeps_zero_to_five_per_rare_item_and_none_in_validation():
    """cold_item_max_history: 5: each rare item keeps a uniform 0..5 of its interactions for
    training, none for validation; test is exactly the rest of the rare items' interactions;
    nothing is lost; the same seed gives the same split and the pure cold-item split is unchanged."""
    config, dataset, (train, valid, test) = split("Pop", SPARSE_ITEM)
    rare = test._dataset.candidate_items.numpy()
    items = lambda part: part._dataset.inter_feat["item_id"].numpy()
    counts = np.bincount(items(train), minlength=dataset.item_num)
    total = np.bincount(np.concatenate([items(train), items(valid), items(test)]), minlength=dataset.item_num)
    assert abs(rare.sum() - 0.2 * (dataset.item_num - 1)) <= 1
    assert set(counts[rare].tolist()) == {0, 1, 2, 3, 4, 5}
    assert (counts[rare] <= total[rare]).all() and rare[items(test)].all() and not rare[items(valid)].any()
    assert (np.bincount(items(test), minlength=dataset.item_num)[rare] == total[rare] - counts[rare]).all()
    assert len(train._dataset) + len(valid._dataset) + len(test._dataset) == len(atomic_pairs(config))
    _, again, (train2, _, _) = split("Pop", SPARSE_ITEM)
    assert sorted(pairs(dataset, train._dataset)) == sorted(pairs(again, train2._dataset))
    _, _, (_, _, cold_test) = split("Pop", COLD_ITEM)
    assert torch.equal(cold_test._dataset.candidate_items, test._dataset.candidate_items)


def test_non_candidates_are_masked_at_full_sort_time(cold_item_split):
    from recbole_cllm4rec.registry import get_model, get_trainer

    config, dataset, (train, _, test) = cold_item_split
    model = get_model("Pop")(config, train._dataset)
    model.calculate_loss(train._dataset.inter_feat)
    trainer = get_trainer(config["MODEL_TYPE"], "Pop")(config, model)
    trainer.tot_item_num = dataset.item_num
    batch = next(iter(test))
    mask = test._dataset.candidate_items
    trainer._candidate_items = mask  # what evaluate() sets from the test Dataset
    _, scores, _, _ = trainer._full_sort_batch_eval(batch)
    assert torch.isinf(scores[:, ~mask]).all() and mask[scores.argmax(1)].all()
    trainer._candidate_items = None
    _, scores, _, _ = trainer._full_sort_batch_eval(batch)
    assert not mask[scores.argmax(1)].any()  # Pop's top items overall are warm


@pytest.mark.parametrize(
    "model, overrides",
    [
        ("Pop", {}),
        ("Random", {}),
        ("BPR", {}),
        ("TextKNN", {}),
        ("AlphaRec", {"mlp_hidden_size": 64}),
        ("CLLM4Rec", dict(TINY_CLLM4REC, content_init="text", cold_item_rows="content_map")),
        ("CLLM4Rec", dict(TINY_CLLM4REC, use_content=False)),  # the protocol's own text_map
    ],
)
def test_every_general_model_scores_cold_items(cold_item_split, model, overrides):
    from recbole_cllm4rec.registry import get_model

    config = build_config(model, "ml-100k", [COLD_ITEM], dict(QUIET, **overrides))
    _, _, (train, _, test) = cold_item_split
    recommender = get_model(model)(config, train._dataset)
    if model == "Pop":  # counts its items in its one training pass
        recommender.calculate_loss(train._dataset.inter_feat)
    recommender.eval()
    users = test._dataset.inter_feat["user_id"][:8].unique()
    scores = recommender.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
    cold = scores[:, test._dataset.candidate_items]
    assert torch.isfinite(cold).all()
    if model in ("TextKNN", "AlphaRec", "CLLM4Rec"):  # text gives each cold item its own score
        assert cold[0].unique().numel() > 0.9 * cold.shape[1]


def test_cllm4rec_ranks_cold_items_by_rows_mapped_from_their_content_rows(cold_item_split):
    from recbole_cllm4rec.model.cllm4rec import CLLM4Rec
    from recbole_cllm4rec.model.cold_items import fit_map, ranking_rows

    config = build_config(
        "CLLM4Rec",
        "ml-100k",
        [COLD_ITEM],
        dict(QUIET, **TINY_CLLM4REC, content_init="text", cold_item_rows="content_map"),
    )
    _, _, (train, _, test) = cold_item_split
    model = CLLM4Rec(config, train._dataset)
    cold = test._dataset.candidate_items
    # text-initialised content rows: the item words start at the mean embedding of their titles
    assert model.item_content.weight[1:].norm(dim=1).min() > 0
    rows, bias = ranking_rows(model)
    trained = torch.from_numpy(np.bincount(train._dataset.inter_feat["item_id"].numpy(), minlength=model.n_items) > 0)
    assert not (trained & cold).any()
    assert torch.equal(rows[trained], model.item_rec.weight[trained])  # rows with training items untouched
    assert not torch.allclose(rows[cold], model.item_rec.weight[cold])
    # a linear map is recovered where one exists
    x = torch.randn(300, 8, dtype=torch.float64)
    y = x @ torch.randn(8, 3, dtype=torch.float64) + 1.0
    (w, b), _ = fit_map(x, y, seed=0)
    assert (x @ w + b - y).abs().max() < 0.05 * y.abs().max()
    with pytest.raises(ValueError, match="content_init: text"):
        CLLM4Rec(
            build_config(
                "CLLM4Rec",
                "ml-100k",
                [COLD_ITEM],
                dict(
                    QUIET, **dict(TINY_CLLM4REC, use_content=False, content_init="random", cold_item_rows="content_map")
                ),
            ),
            train._dataset,
        )


def test_non_general_models_refuse_with_one_line():
    with pytest.raises(InputError, match="SASRec cannot run the cold-start protocols") as err:
        build_config("SASRec", "ml-100k", [COLD_ITEM], dict(QUIET, loss_type="BPR"))
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="both set"):
        build_config("Pop", "ml-100k", [COLD_ITEM], dict(QUIET, cold_user_ratio=0.2))
    with pytest.raises(InputError, match="cold_user_max_history: 5"):
        build_config("Pop", "ml-100k", config_dict=dict(QUIET, cold_user_ratio=0.2))
    with pytest.raises(InputError, match="cold_item_ratio=1.5 is out of range"):
        build_config("Pop", "ml-100k", [COLD_ITEM], dict(QUIET, cold_item_ratio=1.5))


def test_run_writes_the_whole_catalogue_and_bucket_tables(workdir):
    item = recbole_cllm4rec.run("Pop", "ml-100k", [COLD_ITEM], dict(QUIET), saved=False)
    ((title, whole),) = item["extra_results"].items()
    assert "whole catalogue" in title
    assert whole["ndcg@10"] == 0 < item["test_result"]["ndcg@10"]  # overall, Pop ranks warm items first
    assert "cold items" in item["protocol"]
    user = recbole_cllm4rec.run("Pop", "ml-100k", [COLD_USER], dict(QUIET), saved=False)
    (cold_title, cold_only), (title, buckets) = user["extra_results"].items()
    assert cold_title == "test, the cold users only"
    assert [c.split(" ")[0] for c in buckets] == ["0", "1-2", "3-5", "6+"]
    assert all(np.isfinite(v) for v in buckets.values())
    # ml-100k users all have 20+ ratings, so the cold users are exactly the buckets up to 5:
    # their table is the user-weighted mean of those buckets (NDCG is a per-user mean)
    counts = [int(c.split("(")[1].split()[0]) for c in buckets]
    values = list(buckets.values())
    expected = sum(n * v for n, v in zip(counts[:3], values[:3])) / sum(counts[:3])
    assert cold_only["ndcg@10"] == pytest.approx(expected, abs=2e-4)
    from recbole_cllm4rec.coldstart import extra_tables

    lines = extra_tables([user])
    assert lines[0].startswith("Test, the cold users only") and lines[-2].startswith("| Pop |")


def test_alpharec_can_keep_cold_items_out_of_its_negatives(cold_item_split):
    from recbole_cllm4rec.model.alpharec import AlphaRec

    _, _, (train, _, test) = cold_item_split
    config = build_config("AlphaRec", "ml-100k", [COLD_ITEM], dict(QUIET, mlp_hidden_size=64, negative_items="trained"))
    model = AlphaRec(config, train._dataset)
    negatives = model.sample_negatives(torch.arange(1, 65))
    assert not test._dataset.candidate_items[negatives].any()
    assert negatives.unique().numel() > 1000  # still spread over the warm catalogue
