import os

import pytest

import recbole_cllm4rec  # noqa: F401  (applies the RecBole patches before any test builds a Config)
from recbole_cllm4rec.llm import backbone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tiny CLLM4Rec, ranking with 2 history orders: the averaged path at a quarter of its cost.
TINY_CLLM4REC = {**backbone.TINY_CLLM4REC, "state": "WARNING", "eval_prompt_draws": 2}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a temporary folder so saved/ and log/ never land in the checkout."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def ml100k_tiny():
    """(config, train dataset, dataloaders, model) for CLLM4Rec on ml-100k with the tiny backbone."""
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_cllm4rec.model.cllm4rec import CLLM4Rec
    from recbole_cllm4rec.quick_start import build_config

    config = build_config("CLLM4Rec", "ml-100k", config_dict=TINY_CLLM4REC)
    init_seed(config["seed"], True)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    return config, dataset, (train, valid, test), CLLM4Rec(config, train._dataset)
