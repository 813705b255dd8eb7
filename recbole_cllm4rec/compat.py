"""Version shims: what RecBole 1.2.1 needs on today's numpy 2 / torch >= 2.6 / scipy >= 1.13 /
pandas 2 stack, each naming the upstream issue it works around.

Each is applied once, by ``apply()`` (called when ``recbole_cllm4rec`` is imported). Input checks
wired into RecBole live in ``validation.apply``, the multi-process fixes in ``distributed``. Nothing here changes RecBole's results: the
same BPR and LightGCN numbers came out on numpy 1.26 and on numpy 2.4 with these patches.
"""

import os
import sys
import types

import numpy as np

_applied = False


def _numpy_aliases():
    """NumPy 2 removed ``np.float_``/``np.unicode_``/...; RecBole's ``Config.compatibility_settings``
    reads them (and crashes), then its metrics use ``np.float``-style names it meant to recreate
    (RecBole issues #1604, #2215; unreleased fix #2203). The aliases are set at import too: a
    Config unpickled from a checkpoint (``load_data_and_model``) never runs that method."""
    from recbole.config import configurator

    aliases = {
        "bool": np.bool_,
        "int": np.int_,
        "float": np.float64,
        "complex": np.complex128,
        "object": np.object_,
        "str": np.str_,
        "long": np.int_,
        "unicode": np.str_,
    }

    def compatibility_settings(self):
        for name, value in aliases.items():
            if name not in np.__dict__:
                setattr(np, name, value)

    configurator.Config.compatibility_settings = compatibility_settings
    compatibility_settings(None)


def _torch_load_checkpoints():
    """torch >= 2.6 defaults ``torch.load(weights_only=True)``, but RecBole's checkpoints pickle
    its ``Config`` (RecBole issues #2155, #2212), so its loads fail. Upstream's workaround,
    ``weights_only=False``, lets a crafted ``.pth`` run code through ``resume_file``,
    ``load_data_and_model`` or ``evaluate(model_file=)``. Calls made from inside RecBole go
    through ``checkpoint.load_checkpoint`` instead: an allow-list unpickler (``weights_only=True``'s
    rule) that builds only the plain-data types RecBole's checkpoints hold (its Config, enums,
    numpy scalars), anything else refused, NaN/inf tensors refused. They also map a GPU checkpoint onto the CPU when no
    GPU is present, and a DDP or GPU run's saved config is made loadable by one process here."""
    import torch

    if getattr(torch.load, "_recbole_compat", False):
        return
    original = torch.load

    def load(f, *args, **kwargs):
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if not caller.startswith("recbole.") or not isinstance(f, (str, os.PathLike)):
            return original(f, *args, **kwargs)
        from recbole_cllm4rec.checkpoint import load_checkpoint

        map_location = args[0] if args else kwargs.get("map_location")
        return load_checkpoint(f, map_location, require_state_dict=False)

    load._recbole_compat = True
    torch.load = load


def _scipy_dok_update():
    """scipy >= 1.13 dropped ``dok_matrix._update``, which LightGCN, NGCF, GCMC, SpectralCF, NCL,
    KGIN and MCCLK use to fill their adjacency matrix (RecBole issues #2034, #2185)."""
    from scipy.sparse import dok_matrix

    if hasattr(dok_matrix, "_update"):
        return

    def _update(self, data):
        # The same unchecked bulk insert the old method did: keys are (row, col) in range.
        self._dict.update(data)

    dok_matrix._update = _update


def _ray_optional():
    """``recbole.quick_start`` imports ``ray.tune`` at import time only to call ``tune.report`` at the
    end of ``objective_function``. Ray (150 MB, and broken on numpy 2 / setuptools >= 82 in the
    version RecBole pins, RecBole issue #2215) is needed only for Ray Tune searches, so without it a stand-in whose
    ``report`` does nothing keeps ``run_recbole`` and hyperopt-based ``HyperTuning`` working.
    Install ray yourself to use Ray Tune; the real package is then used."""
    try:
        import ray.tune  # noqa: F401

        return
    except Exception:  # ImportError, or ray's own import-time failures on today's stack
        pass
    ray = types.ModuleType("ray")
    tune = types.ModuleType("ray.tune")
    tune.report = lambda *args, **kwargs: None
    ray.tune = tune
    ray.__recbole_cllm4rec_stub__ = True
    sys.modules["ray"] = ray
    sys.modules["ray.tune"] = tune


def _check_pandas():
    """pandas 3's copy-on-write makes RecBole's ``df[field].fillna(inplace=True)`` a no-op, so
    NaNs stay unfilled and an empty ``token_seq`` cell crashes (dataset.py:501). No upstream issue
    found; RecBole 1.2.1 sets no upper bound on pandas, so this refuses pandas 3 at import."""
    import pandas

    if int(pandas.__version__.split(".")[0]) >= 3:
        raise ImportError(
            f"pandas {pandas.__version__} breaks RecBole 1.2.1's atomic-file loading "
            f"(copy-on-write turns its in-place fillna into a no-op); install pandas<3"
        )


def _quiet_pandas_notices():
    """pandas 2.x warns on every RecBole dataset load that its chained in-place ``fillna`` will stop
    working in pandas 3; it works on the pinned pandas<3, so the notice is only noise."""
    import warnings

    warnings.filterwarnings("ignore", message=".*inplace method will never work.*")
    warnings.filterwarnings("ignore", message=".*ChainedAssignment.*")


def apply():
    """Apply every patch, once. Must run before RecBole builds a Config or a Dataset."""
    global _applied
    if _applied:
        return
    _check_pandas()
    _quiet_pandas_notices()
    _ray_optional()  # before anything imports recbole.quick_start
    _numpy_aliases()
    _torch_load_checkpoints()
    _scipy_dok_update()
    _applied = True
