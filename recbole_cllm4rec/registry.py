"""Wiring this package into the places RecBole's own entry points look: ``run_recbole``,
``load_data_and_model`` and ``objective_function`` find models by name through
``recbole.utils.get_model``, trainers through ``recbole.trainer``, and model defaults in RecBole's
properties folder only. The lookups themselves live with what they find (``model.get_model``,
``trainer.get_trainer``); they are re-exported here."""

import os
import sys

from recbole_cllm4rec.model import OUR_MODELS, ModelNotFoundError, available_models, get_model, our_module
from recbole_cllm4rec.properties import properties_dir, property_file
from recbole_cllm4rec.trainer import get_trainer, our_trainer

__all__ = [
    "OUR_MODELS",
    "ModelNotFoundError",
    "DatasetNotFoundError",
    "available_models",
    "get_model",
    "get_trainer",
    "properties_dir",
    "property_file",
    "check_dataset",
    "register_with_recbole",
]


class DatasetNotFoundError(FileNotFoundError):
    pass


def check_dataset(config):
    """Fail at once, with the fix, when the atomic files are not on disk."""
    path, name = config["data_path"], config["dataset"]
    if config["benchmark_filename"]:
        wanted = [f"{name}.{part}.inter" for part in config["benchmark_filename"]]
    else:
        wanted = [f"{name}.inter"]
    missing = [f for f in wanted if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise DatasetNotFoundError(
            f"dataset '{name}' not found: expected {', '.join(missing)} under '{path}'. RecBole "
            f"cannot download datasets here (no network): put the atomic files in that folder "
            f"(or set data_path to the folder that holds '{name}/'), or convert a raw dump with "
            f"`python -m recbole_cllm4rec.data.convert`. ml-100k ships with RecBole"
            + (" (its copy is read when no data_path is given)." if name == "ml-100k" else ".")
        )


def config_with_our_defaults(model=None, dataset=None, config_file_list=None, config_dict=None):
    """RecBole's ``Config``, with ``properties/model/<Model>.yaml`` read before the user's files
    when the model is one of this package's (as ``quick_start.build_config`` does). A function
    rather than a subclass: checkpoints keep pickling RecBole's own ``Config`` class."""
    from recbole.config import Config

    name = model if isinstance(model, str) else getattr(model, "__name__", None)
    defaults = property_file("model", name) if name in OUR_MODELS else None
    files = ([defaults] if defaults else []) + list(config_file_list or [])
    return Config(model=model, dataset=dataset, config_file_list=files or None, config_dict=config_dict)


def register_with_recbole():
    """Make RecBole's own name-based lookups find this package's models, trainers and defaults."""
    import recbole.trainer
    from recbole.data.dataset import Dataset
    from recbole.quick_start import quick_start

    for name in OUR_MODELS:
        module = our_module(name)
        if module is None:
            continue
        # recbole.utils.get_model probes recbole.model.<package>.<name.lower()> with find_spec,
        # which answers from sys.modules, then reads the class off that module.
        sys.modules[f"recbole.model.general_recommender.{name.lower()}"] = module
        trainer = our_trainer(name)
        if trainer is not None:
            setattr(recbole.trainer, f"{name}Trainer", trainer)

    # run_recbole and objective_function build their Config by this module-level name; only
    # they are redirected, RecBole's Config class itself is left as it is.
    quick_start.Config = config_with_our_defaults

    def _download(self):
        check_dataset(self.config)

    Dataset._download = _download

    from recbole_cllm4rec import coldstart

    coldstart.register()  # the cold-start splits and the candidate mask at full-sort time
