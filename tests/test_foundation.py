"""Model lookup, offline datasets, config errors, the CLI, and RecBole's own entry points."""

import os

import pytest
import torch

import recbole_cllm4rec
import run_recbole
from recbole_cllm4rec import ConfigFileError, DatasetNotFoundError, ModelNotFoundError, get_model
from recbole_cllm4rec.model.cllm4rec import CLLM4Rec

QUICK = {"show_progress": False, "state": "WARNING"}


def test_our_models_resolve_first_then_recboles():
    assert get_model("CLLM4Rec") is CLLM4Rec
    from recbole.model.general_recommender import LightGCN, MultiVAE

    assert get_model("LightGCN") is LightGCN
    assert get_model("MultiVAE") is MultiVAE


def test_recbole_own_lookups_find_our_models():
    from recbole.utils import get_model as recbole_get_model
    from recbole.utils import get_trainer
    from recbole.utils.enum_type import ModelType

    from recbole_cllm4rec.trainer.cllm4rec_trainer import CLLM4RecTrainer

    assert recbole_get_model("CLLM4Rec") is CLLM4Rec
    assert get_trainer(ModelType.GENERAL, "CLLM4Rec") is CLLM4RecTrainer


def test_unknown_model_lists_closest_names():
    with pytest.raises(ModelNotFoundError) as err:
        get_model("LightGNC")
    assert "LightGCN" in str(err.value)
    with pytest.raises(ModelNotFoundError, match="CLLM4Rec"):
        get_model("cllm4rec")


def test_cli_reports_unknown_model_without_traceback(capsys):
    assert run_recbole.main(["--model=MultiVea"]) == 2
    assert "MultiVAE" in capsys.readouterr().err


def test_missing_dataset_says_where_to_put_files(workdir):
    with pytest.raises(DatasetNotFoundError) as err:
        recbole_cllm4rec.run("Pop", "amazon-nope", config_dict=dict(QUICK, data_path=str(workdir)))
    message = str(err.value)
    assert "amazon-nope.inter" in message and str(workdir) in message and "cannot download" in message


def test_missing_and_malformed_config_files(workdir):
    with pytest.raises(ConfigFileError, match="does not exist"):
        recbole_cllm4rec.run("Pop", config_file_list=["nope.yaml"], config_dict=QUICK)
    bad = workdir / "bad.yaml"
    bad.write_text("learning_rate: [0.1\n")
    with pytest.raises(ConfigFileError, match="not valid yaml"):
        recbole_cllm4rec.run("Pop", config_file_list=[str(bad)], config_dict=QUICK)


def test_cli_overrides_are_typed():
    from recbole_cllm4rec.quick_start import parse_overrides

    assert parse_overrides(["--learning_rate=0.01", "--topk=[10,20]", "--x=true", "--s=abc"]) == {
        "learning_rate": 0.01,
        "topk": [10, 20],
        "x": True,
        "s": "abc",
    }


def test_ml100k_runs_offline_and_checkpoint_reloads_through_recbole(workdir):
    """BPR end to end on the embedded ml-100k; RecBole's load_data_and_model + full_sort_topk
    give the saved model's scores back (torch >= 2.6 weights_only default handled)."""
    result = recbole_cllm4rec.run("BPR", "ml-100k", config_dict=dict(QUICK, epochs=2))
    assert result["test_result"]["ndcg@10"] > 0.012  # random ranking gives ~0.006
    assert os.path.isfile(result["model_file"])

    from recbole.quick_start import load_data_and_model
    from recbole.utils.case_study import full_sort_topk

    config, model, dataset, train, valid, test = load_data_and_model(result["model_file"])
    users = torch.tensor([1, 2, 3])
    scores, items = full_sort_topk(users, model, test, k=10, device=config["device"])
    again, _ = full_sort_topk(users, model, test, k=10, device=config["device"])
    assert torch.equal(scores, again) and items.shape == (3, 10)


def test_compare_writes_a_side_by_side_table(workdir):
    results_file = workdir / "results" / "ml-100k.md"
    results, table = recbole_cllm4rec.compare(
        ["Pop", "ItemKNN"], "ml-100k", config_dict=QUICK, results_file=str(results_file)
    )
    assert [r["model"] for r in results] == ["Pop", "ItemKNN"]
    text = results_file.read_text()
    assert "| Pop |" in text and "| ItemKNN |" in text and "Protocol:" in text and "peak RSS" in text
    # ItemKNN is far above popularity on ml-100k (.28 vs .10 test NDCG@10 measured)
    assert results[1]["test_result"]["ndcg@10"] > results[0]["test_result"]["ndcg@10"]
