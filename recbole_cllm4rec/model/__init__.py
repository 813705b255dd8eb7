"""This package's models, found by name: ``get_model`` looks here first, then in RecBole."""

import difflib
import importlib

# name -> module defining the model class (imported on first use)
OUR_MODELS = {
    "CLLM4Rec": "recbole_cllm4rec.model.cllm4rec",
    "AlphaRec": "recbole_cllm4rec.model.alpharec",
    "TextKNN": "recbole_cllm4rec.model.textknn",
}
RECBOLE_MODEL_PACKAGES = [
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
]


class ModelNotFoundError(ValueError):
    pass


def our_module(name):
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


def available_models():
    ours = [n for n in OUR_MODELS if our_module(n) is not None]
    return ours, sorted(recbole_model_names() - set(ours))


def get_model(name):
    """The model class for ``name``: this package's models first, then RecBole's."""
    if name in OUR_MODELS and our_module(name) is not None:
        return getattr(our_module(name), name)
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
