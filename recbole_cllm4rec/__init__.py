"""CLLM4Rec and AlphaRec as RecBole models. Importing the package patches RecBole 1.2.1 for
today's numpy/torch/scipy (``compat``), wires the input checks into it (``validation``) and
registers the models with RecBole's lookups; README "Patches" lists every patch."""

from recbole_cllm4rec import compat, distributed, validation

compat.apply()
validation.apply()
distributed.apply()  # the device set-up; the DDP patches wait for a multi-process run

from recbole_cllm4rec.evaluator import register_metrics  # noqa: E402

register_metrics()  # TRecall, the paper's truncated recall, beside RecBole's metrics

from recbole_cllm4rec.registry import (  # noqa: E402
    DatasetNotFoundError,
    ModelNotFoundError,
    get_model,
    get_trainer,
    register_with_recbole,
)

register_with_recbole()

from recbole_cllm4rec.checkpoint import CheckpointError  # noqa: E402
from recbole_cllm4rec.data.corpus import CorpusError  # noqa: E402
from recbole_cllm4rec.data.text import TextFieldError  # noqa: E402
from recbole_cllm4rec.llm.backbone import BackboneError  # noqa: E402
from recbole_cllm4rec.quick_start import (  # noqa: E402
    ConfigFileError,
    Interrupted,
    UnguardedMainError,
    compare,
    run,
)
from recbole_cllm4rec.validation import InputError  # noqa: E402

# Mistakes in a user's input: the CLI prints their message (which says the fix), no traceback.
USER_ERRORS = (
    ModelNotFoundError,
    DatasetNotFoundError,
    ConfigFileError,
    BackboneError,
    TextFieldError,
    CorpusError,
    InputError,
    CheckpointError,
    UnguardedMainError,
)

__version__ = "0.1.0"
__all__ = [
    "run",
    "compare",
    "get_model",
    "get_trainer",
    "ModelNotFoundError",
    "DatasetNotFoundError",
    "ConfigFileError",
    "BackboneError",
    "USER_ERRORS",
    "Interrupted",
]
