import os

import pytest

import recbole_cllm4rec  # noqa: F401  (applies the RecBole patches before any test builds a Config)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A quiet, fast CLLM4Rec: random 2-layer backbone on the real SmolLM2 tokenizer.
TINY_CLLM4REC = {
    "llm_path": "tiny-random",
    "show_progress": False,
    "state": "WARNING",
    "autocast": "fp32",
    "content_warmup_epochs": 1,
    "pretrain_epochs": 1,
    "epochs": 1,
    "pretrain_batch_size": 64,
    "finetune_batch_size": 64,
    "max_doc_items": 32,
    "max_text_tokens": 16,
    "eval_prompt_draws": 2,  # the averaged ranking path, at a quarter of the default cost
    "readout_layers": 1,  # of the tiny backbone's 2: the truncated read-out path is the default one
    "use_content": True,  # every stage (content LM, MR) runs in the tests, though the default skips it
}


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
