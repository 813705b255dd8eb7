"""Multi-process training through RecBole's DDP path, on CPU with gloo (2 ranks)."""

import socket

import pytest

import recbole_cllm4rec
from recbole_cllm4rec.distributed import ExactShardSampler
from tests.conftest import TINY_CLLM4REC

# Every stage runs (content, collaborative, recommend), the content LM once to save time.
ONE_EPOCH = dict(TINY_CLLM4REC, content_warmup_epochs=0)
TWO_EPOCHS = dict(ONE_EPOCH, epochs=2)
METRICS = ["recall@10", "ndcg@10", "mrr@10", "hit@10"]


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return str(s.getsockname()[1])


def ddp(model, config_dict, nproc=2):
    return recbole_cllm4rec.run(model, "ml-100k", config_dict=config_dict, nproc=nproc, port=free_port())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One-process and two-process CLLM4Rec runs of the same schedule, in a scratch folder."""
    import os

    folder = tmp_path_factory.mktemp("ddp")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        single = recbole_cllm4rec.run("CLLM4Rec", "ml-100k", config_dict=TWO_EPOCHS)
        double = ddp("CLLM4Rec", TWO_EPOCHS)
        first_epoch = ddp("CLLM4Rec", ONE_EPOCH)
        resumed = ddp("CLLM4Rec", dict(TWO_EPOCHS, resume_file=first_epoch["model_file"]))
    finally:
        os.chdir(cwd)
    logs = os.listdir(os.path.join(folder, "log", "CLLM4Rec"))
    assert len(logs) == 4, logs  # one log per run: rank 1 writes none
    return {"single": single, "ddp": double, "first_epoch": first_epoch, "resumed": resumed, "folder": folder}


def test_exact_shards_cover_every_index_once():
    shards = [list(ExactShardSampler(10, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(10))
    assert [len(s) for s in shards] == [4, 3, 3]


def test_two_gloo_processes_match_one_process(runs):
    single, double = runs["single"], runs["ddp"]
    assert double["nproc"] == 2 and double["stages"]["recommend"]["epochs"] == 2
    # Each rank trains on its shard of the same global batches and the weighted gradients are
    # summed, so the pretraining losses agree to float precision...
    for stage in ("collaborative", "content(collab)"):
        for (lm, mr), (lm1, mr1) in zip(double["stages"][stage]["losses"], single["stages"][stage]["losses"]):
            assert (lm, mr) == pytest.approx((lm1, mr1), rel=1e-4), stage
    # ...and then drift apart slowly: Adam amplifies float rounding in the multinomial head's
    # gradients (sums of cancelling terms), so finetuning matches loosely and metrics within 0.02.
    for losses, losses1 in zip(double["stages"]["recommend"]["losses"], single["stages"]["recommend"]["losses"]):
        assert losses == pytest.approx(losses1, rel=0.03)
    for metric in METRICS:
        assert double["test_result"][metric] == pytest.approx(single["test_result"][metric], abs=0.02), metric
    # each rank fed only its shard: the backbone saw the corpus once per epoch, not twice
    for stage in ("collaborative", "content(collab)", "recommend"):
        assert double["stages"][stage]["tokens"] == single["stages"][stage]["tokens"], stage


def test_ddp_evaluation_covers_every_user_once(runs, monkeypatch):
    """Rank 0's checkpoint, evaluated by one process, gives the metrics the two ranks reported."""
    from recbole.quick_start import load_data_and_model
    from recbole.utils import get_trainer

    monkeypatch.chdir(runs["folder"])
    double = runs["ddp"]
    config, model, _, _, _, test_data = load_data_and_model(double["model_file"])
    assert config["single_spec"] and model.device.type == "cpu"
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    result = trainer.evaluate(test_data, load_best_model=False)
    for metric in METRICS:
        assert result[metric] == pytest.approx(double["test_result"][metric], abs=2e-4), metric


def test_run_killed_after_an_epoch_resumes_under_ddp(runs):
    """Epoch 0's checkpoint plus one more epoch equals the uninterrupted two-epoch run: tables,
    optimiser state and the random stream all come back, and pretraining is not redone."""
    resumed, uninterrupted = runs["resumed"], runs["ddp"]
    assert "collaborative" not in resumed["stages"] and resumed["stages"]["recommend"]["epochs"] == 1
    for metric in METRICS:
        assert resumed["test_result"][metric] == pytest.approx(uninterrupted["test_result"][metric], abs=1e-4), metric


@pytest.mark.parametrize(
    "model, settings",
    [
        ("BPR", {"epochs": 3}),
        (
            "AlphaRec",
            {"epochs": 2, "mlp_hidden_size": 64, "embedding_size": 32, "n_negatives": 32, "train_batch_size": 2048},
        ),
    ],
)
def test_other_models_train_with_two_gloo_processes(workdir, model, settings):
    """RecBole's own trainer (BPR) and AlphaRec's (MiniLM vectors, LightGCN, InfoNCE) under DDP."""
    result = ddp(
        model, {**settings, "show_progress": False, "state": "WARNING", "embedding_cache_dir": str(workdir / "cache")}
    )
    assert result["nproc"] == 2
    assert result["test_result"]["ndcg@10"] > 0.05  # a trained ranking, not a random one
