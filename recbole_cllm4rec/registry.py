"""Model lookup (this package first, RecBole second) and plugging our models into the places
RecBole's own entry points look: ``run_recbole``, ``load_data_and_model`` and
``objective_function`` find models by name through ``recbole.utils.get_model``, trainers through
``recbole.trainer``, and model defaults in RecBole's properties folder only."""

import difflib
import importlib
import os
import sys

# name -> module; each module defines the model class and may define ``<name>Trainer``.
OUR_MODELS = {
    "CLLM4Rec": "recbole_cllm4rec.model.cllm4rec",
    "AlphaRec": "recbole_cllm4rec.model.alpharec",
    "TextKNN": "recbole_cllm4rec.model.textknn",
}
RECBOLE_MODEL_PACKAGES = [
    "general_recommender", "context_aware_recommender", "sequential_recommender",
    "knowledge_aware_recommender",
]


class ModelNotFoundError(ValueError):
    pass


class DatasetNotFoundError(FileNotFoundError):
    pass


def properties_dir():
    """``properties/`` beside the package in a checkout; inside it when installed as a wheel."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "properties"), os.path.join(os.path.dirname(here), "properties")):
        if os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(f"the properties folder of recbole_cllm4rec is missing beside {here}")


def property_file(kind, name):
    """``properties/<kind>/<name>.yaml`` if this project ships one, else None."""
    path = os.path.join(properties_dir(), kind, f"{name}.yaml")
    return path if os.path.isfile(path) else None


def _our_module(name):
    try:
        return importlib.import_module(OUR_MODELS[name])
    except ModuleNotFoundError as err:
        if err.name == OUR_MODELS[name]:
            return None  # listed but not part of this build
        raise


def recbole_model_names():
    names = set()
    for package in RECBOLE_MODEL_PACKAGES:
        module = importlib.import_module(f"recbole.model.{package}")
        names.update(n for n in dir(module) if not n.startswith("_") and n[0].isupper())
    return names


def _our_trainer(name):
    """``<name>Trainer`` from ``recbole_cllm4rec.trainer``, or None (RecBole's trainer applies)."""
    return getattr(importlib.import_module("recbole_cllm4rec.trainer"), f"{name}Trainer", None)


def available_models():
    ours = [n for n in OUR_MODELS if _our_module(n) is not None]
    return ours, sorted(recbole_model_names() - set(ours))


def get_model(name):
    """The model class for ``name``: this package's models first, then RecBole's."""
    if name in OUR_MODELS and _our_module(name) is not None:
        return getattr(_our_module(name), name)
    ours, theirs = available_models()
    if name in theirs:
        from recbole.utils import get_model as recbole_get_model
        return recbole_get_model(name)
    known = ours + theirs
    close = [n for n in known if n.lower() == name.lower()]
    close += [n for n in difflib.get_close_matches(name, known, n=5, cutoff=0.5) if n not in close]
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ModelNotFoundError(
        f"unknown model '{name}': {hint}models of this package: {', '.join(ours)}; "
        f"RecBole's models are listed by `python run_recbole.py --list_models`"
    )


def get_trainer(model_type, name):
    """The model's trainer with ``checkpoint.CheckpointMixin``: unique, atomic, identified,
    safely loaded checkpoints and a last-state checkpoint per epoch, for RecBole's models too."""
    from recbole_cllm4rec.checkpoint import reliable

    if name in OUR_MODELS:
        trainer = _our_trainer(name)
        if trainer is not None:
            return reliable(trainer)
    from recbole.utils import get_trainer as recbole_get_trainer
    return reliable(recbole_get_trainer(model_type, name))


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
            f"`python -m recbole_cllm4rec.data.convert`. ml-100k ships with RecBole."
        )


def register_with_recbole():
    """Make RecBole's own name-based lookups find this package's models, trainers and defaults."""
    import recbole.trainer
    from recbole.config import Config
    from recbole.data.dataset import Dataset

    for name, module_name in OUR_MODELS.items():
        module = _our_module(name)
        if module is None:
            continue
        # recbole.utils.get_model probes recbole.model.<package>.<name.lower()> with find_spec,
        # which answers from sys.modules, then reads the class off that module.
        sys.modules[f"recbole.model.general_recommender.{name.lower()}"] = module
        trainer = _our_trainer(name)
        if trainer is not None:
            setattr(recbole.trainer, f"{name}Trainer", trainer)

    if not getattr(Config._load_internal_config_dict, "_ours", False):
        load_internal = Config._load_internal_config_dict

        def _load_internal_config_dict(self, model, model_class, dataset):
            load_internal(self, model, model_class, dataset)
            defaults = property_file("model", model) if model in OUR_MODELS else None
            if defaults:
                self._update_internal_config_dict(defaults)

        _load_internal_config_dict._ours = True
        Config._load_internal_config_dict = _load_internal_config_dict

    def _download(self):
        check_dataset(self.config)

    Dataset._download = _download

    from recbole_cllm4rec import coldstart

    coldstart.register()  # the cold-start splits and the candidate mask at full-sort time
