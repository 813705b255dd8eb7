"""Checkpoints that cannot be lost, mixed up or used to run code.

RecBole 1.2.1 names a run's checkpoint ``saved/<Model>-<time>.pth`` to the second (two runs
started together share it), writes it in place (a kill mid-save leaves 0 bytes), overwrites the
file ``resume_file`` names, accepts any checkpoint whose tensor shapes fit, saves only when
validation improves (a resumed run restarts at the best epoch), and, on torch >= 2.6, needs
``weights_only=False`` because it pickles its ``Config``. Here:

* names carry the pid and a random suffix (``run_stamp``), checkpoints and log files alike;
* every write goes to a temporary file in the same folder, then ``os.replace`` (atomic);
* a checkpoint carries what it belongs to (``identity``: model, dataset, user and item counts,
  split); resuming or evaluating with another one is a one-line ``CheckpointError``;
* ``<name>.pth`` stays RecBole's best checkpoint; ``<name>-last.pth`` holds the state after
  the last finished epoch (or CLLM4Rec pretraining stage): ``resume_file`` takes either, and a
  resumed run writes new files, never its source;
* ``load_checkpoint`` unpickles through an allow-list (``weights_only=True``'s rule) of the plain-data
  types RecBole's checkpoints hold, and refuses non-finite tensors.

``ReliableTrainer`` (``CheckpointMixin`` on RecBole's ``Trainer``) carries all of it;
``registry.get_trainer`` hands RecBole's own models (BPR, LightGCN, ...) a subclass of their
trainer with the mixin.
"""

import contextlib
import hashlib
import os
import pickle
import secrets
import signal
import threading
from time import time

import numpy as np
import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here: unsafe, corrupt, or another run's."""


# ---- names and atomic writes ------------------------------------------------------------------
def run_stamp():
    """RecBole's ``get_local_time()`` plus the pid and a random suffix: unique per run even for
    runs started in the same second, in one process or many, on one machine or several."""
    from recbole.utils import utils

    return f"{utils.get_local_time()}-{os.getpid()}-{secrets.token_hex(2)}"


def last_state_file(best_file):
    root, ext = os.path.splitext(best_file)
    return f"{root}-last{ext or '.pth'}"


@contextlib.contextmanager
def signals_held(signals=(signal.SIGINT, signal.SIGTERM)):
    """Ctrl-C or SIGTERM waits until the block ends, then takes effect as usual. An exception
    raised inside ``torch.save``'s C++ writer (which a Python signal handler does) aborts the
    whole process ("terminate called after throwing ..."): no message, no clean-up."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread runs Python signal handlers
        return
    caught = []
    previous = {}
    try:
        for sig in signals:
            handler = signal.getsignal(sig)
            if handler is not None:  # None: set outside Python, cannot be put back
                previous[sig] = handler
                signal.signal(sig, lambda signum, frame: caught.append(signum))
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(caught):  # each signal once, through its own handler again
            signal.raise_signal(sig)


def atomic_save(obj, path):
    """``torch.save`` to a temporary file beside ``path``, flushed, then renamed over it: a kill
    at any point leaves either the previous file or the new one, never a partial one; Ctrl-C and
    SIGTERM wait for the write (``signals_held``)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}-{secrets.token_hex(3)}.tmp")
    with signals_held():  # a signal during the write takes effect once the new file is in place
        try:
            with open(tmp, "wb") as f:
                torch.save(obj, f)  # torch's default protocol: plain tables then load with weights_only=True
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise


def remove_stale_temporaries(folder, min_age_s=3600):
    """Temporary files of ``atomic_save`` left by a killed process (its pid gone, older than an
    hour): the checkpoint they were becoming was never renamed over anything."""
    import re

    pattern = re.compile(r"^\..+\.(\d+)-[0-9a-f]{6}\.tmp$")
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = pattern.match(name)
        path = os.path.join(folder, name)
        if not match:
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue  # its writer is alive
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        try:
            if time() - os.path.getmtime(path) > min_age_s:
                os.remove(path)
        except OSError:
            pass


# ---- safe loading ---------------------------------------------------------------------------
# torch's own ``weights_only=True`` unpickler reads pickle protocol 2 only, but RecBole writes
# protocol 4; so checkpoints are read by torch's loader with the standard restricted unpickler
# (``find_class`` answers from an allow-list, anything else is refused), which reads both.
class _Placeholder:
    """Stands in for a class a RecBole ``Config`` references (its model class, its yaml loader):
    the reference is restored from this package after loading, never taken from the file."""


def _config_shim():
    from recbole.config import Config

    class ConfigShim:
        """Unpickles to a bare ``Config`` filled from the file's attributes; called by a crafted
        pickle it still only makes a bare ``Config`` (``Config.__init__`` is never run)."""

        def __new__(cls, *args, **kwargs):
            return Config.__new__(Config)

    return ConfigShim


def _allowed_globals():
    import numpy
    from recbole.utils import enum_type

    try:  # the tensor rebuilders, dtypes, devices, OrderedDict, ... torch vets for weights_only
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = dict(_get_allowed_globals())
    except ImportError:  # pragma: no cover
        allowed = {
            "collections.OrderedDict": __import__("collections").OrderedDict,
            "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
            "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
            "torch.device": torch.device,
        }
    for value in vars(enum_type).values():
        if isinstance(value, type) and value.__module__ == enum_type.__name__:
            allowed[f"{enum_type.__name__}.{value.__name__}"] = value
    allowed["numpy.dtype"] = numpy.dtype
    for value in vars(numpy.dtypes).values():
        if isinstance(value, type) and issubclass(value, numpy.dtype):
            allowed[f"numpy.dtypes.{value.__name__}"] = value
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        allowed[f"{module}.scalar"] = numpy._core.multiarray.scalar
    # arrays and sparse matrices: other_parameter of EASE, ItemKNN, SLIMElastic, ADMMSLIM, ...
    allowed["numpy.ndarray"] = numpy.ndarray
    allowed["numpy.matrix"] = numpy.matrix
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        allowed[f"{module}._reconstruct"] = numpy._core.multiarray._reconstruct
    import scipy.sparse

    for kind in ("csr", "csc", "coo", "dok", "lil", "bsr", "dia"):
        for suffix in ("matrix", "array"):
            cls = getattr(scipy.sparse, f"{kind}_{suffix}", None)
            if isinstance(cls, type):
                allowed[f"{cls.__module__}.{cls.__qualname__}"] = cls
    allowed["recbole.config.configurator.Config"] = _config_shim()
    allowed["yaml.loader.FullLoader"] = _Placeholder
    return allowed


def _is_model_class(module, name):
    """Whether ``module.name`` is a recommender of this package or RecBole (a Config
    references its model's class)."""
    if not (module.startswith("recbole.model.") or module.startswith("recbole_cllm4rec.model.")):
        return False
    from recbole_cllm4rec.model import ModelNotFoundError, get_model

    try:
        cls = get_model(name)
    except ModelNotFoundError:
        return False
    return cls.__module__ == module or module.endswith(f".{name.lower()}")


class UnsafeCheckpointError(pickle.UnpicklingError):
    pass


def _restricted_pickle():
    """A ``pickle_module`` for ``torch.load`` whose unpickler builds plain data only."""
    import types

    allowed = _allowed_globals()

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            key = f"{module}.{name}"
            if key in allowed:
                return allowed[key]
            if _is_model_class(module, name):
                return _Placeholder
            raise UnsafeCheckpointError(f"it references {key}, which is not plain checkpoint data")

    restricted = types.ModuleType("recbole_cllm4rec_restricted_pickle")
    restricted.Unpickler = Unpickler
    restricted.load = lambda f, **kwargs: Unpickler(f, **kwargs).load()
    restricted.UnpicklingError = pickle.UnpicklingError
    return restricted


def load_checkpoint(path, map_location=None, require_state_dict=True):
    """A checkpoint as plain data: only the types RecBole's checkpoints hold (tensors, numbers,
    strings, containers, its ``Config`` and enums, numpy scalars and dtypes) are unpickled;
    anything else (a pickle that would call code) is refused, and so is a non-finite tensor."""
    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint '{path}' is empty (0 bytes): a write was cut off; use another one")
    if map_location is None and not torch.cuda.is_available():
        map_location = "cpu"
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False, pickle_module=_restricted_pickle())
    except UnsafeCheckpointError as err:
        raise CheckpointError(
            f"refusing to load '{path}': {err}; unpickling it could run code. If you made it yourself "
            f"and trust it, load it with torch.load(weights_only=False) and save its tensors again"
        ) from None
    except Exception as err:  # noqa: BLE001  truncated zip, bad pickle, ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"checkpoint '{path}' is unreadable (truncated or corrupt?): {first}") from None
    if require_state_dict and (not isinstance(checkpoint, dict) or "state_dict" not in checkpoint):
        raise CheckpointError(f"'{path}' is not a RecBole checkpoint (no state_dict)")
    if not isinstance(checkpoint, dict):
        return checkpoint
    config = checkpoint.get("config")
    if config is not None and hasattr(config, "final_config_dict"):
        _restore_config(config)
    refuse_non_finite(checkpoint, f"checkpoint '{path}'")
    return checkpoint


def refuse_non_finite(checkpoint, what):
    """A ``CheckpointError`` naming ``what`` when any of its floating tensors holds NaN or inf."""
    bad = non_finite_tensors(checkpoint)
    if bad:
        raise CheckpointError(
            f"{what} holds NaN or infinite values in {', '.join(bad[:3])}"
            f"{' and more' if len(bad) > 3 else ''}: it is corrupt or the run diverged; use another checkpoint"
        )


def _restore_config(config):
    import yaml

    from recbole_cllm4rec.distributed import single_process_config
    from recbole_cllm4rec.model import get_model

    config.yaml_loader = yaml.FullLoader
    try:
        config.model_class = get_model(config["model"])
    except Exception:  # noqa: BLE001  an unknown model is reported where it is built
        config.model_class = None
    single_process_config(config)


def non_finite_tensors(checkpoint):
    """Names of floating tensors holding NaN or inf, in the model and optimiser states."""
    bad = []

    def walk(value, name):
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and value.numel() and not bool(torch.isfinite(value).all()):
                bad.append(name)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{name}.{k}" if name else str(k))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{name}[{i}]")

    for key in ("state_dict", "optimizer", "optimizers"):
        walk(checkpoint.get(key), key)
    return bad


# ---- what a checkpoint belongs to -------------------------------------------------------------
SPLIT_KEYS = (
    "eval_args",
    "seed",
    "benchmark_filename",
    "load_col",
    "unload_col",
    "rm_dup_inter",
    "val_interval",
    "filter_inter_by_user_or_item",
    "user_inter_num_interval",
    "item_inter_num_interval",
    "USER_ID_FIELD",
    "ITEM_ID_FIELD",
    "cold_item_ratio",
    "cold_user_ratio",
    "cold_user_max_history",
    "cold_item_max_history",
)


def split_fingerprint(config):
    """A short hash of the settings that decide which interactions land in which split."""
    values = {k: config[k] if k in config else None for k in SPLIT_KEYS}
    return hashlib.sha1(repr(sorted(values.items())).encode()).hexdigest()[:12]


def identity(config, model):
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "n_users": getattr(model, "n_users", None),
        "n_items": getattr(model, "n_items", None),
        "split": split_fingerprint(config),
    }


def checkpoint_identity(checkpoint):
    """The identity a checkpoint carries; for a stock RecBole checkpoint, what its Config says."""
    if isinstance(checkpoint.get("identity"), dict):
        return checkpoint["identity"]
    config = checkpoint.get("config")
    if config is None or not hasattr(config, "final_config_dict"):
        return {}
    return {"model": config["model"], "dataset": config["dataset"], "split": split_fingerprint(config)}


def check_identity(checkpoint, expected, path, action="resume from"):
    saved = checkpoint_identity(checkpoint)
    wrong = [
        f"{k} {saved[k]!r} (this run: {expected[k]!r})"
        for k in ("model", "dataset", "n_users", "n_items", "split")
        if saved.get(k) is not None and expected.get(k) is not None and saved[k] != expected[k]
    ]
    if wrong:
        what = "split settings" if wrong[0].startswith("split") else "run"
        raise CheckpointError(
            f"cannot {action} '{path}': it belongs to another {what}: {'; '.join(wrong)}. Use a "
            f"checkpoint of this model, dataset and split, or match the run's settings to it"
        )


def init_run_logger(config):
    """RecBole's ``init_logger`` with a file of this run's own,
    ``log/<Model>/<Model>-<dataset>-<run_stamp>-<md5>.log`` (RecBole names it to the second, so
    runs started together append to one file). The previous run's file of this process is
    detached: ``logging.basicConfig`` would otherwise keep writing every later run into it."""
    import logging
    from unittest import mock

    from recbole.utils import logger as recbole_logger

    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_run_log", False)]:
        root.removeHandler(handler)
        handler.close()
    created = []

    class RunFileHandler(logging.FileHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._run_log = True
            created.append(self)

    stamp = run_stamp()
    with (
        mock.patch.object(recbole_logger, "get_local_time", lambda: stamp),
        mock.patch.object(recbole_logger.logging, "FileHandler", RunFileHandler),
    ):
        recbole_logger.init_logger(config)
    for handler in created:
        if handler not in root.handlers:  # basicConfig does nothing once the root has handlers
            root.addHandler(handler)
            root.setLevel(handler.level)  # the level basicConfig would have set
    return created[0].baseFilename if created else None


# ---- the trainer side -------------------------------------------------------------------------
# sha256 of RecBole 1.2.1's ``Trainer.fit`` source (recbole/trainer/trainer.py), which
# ``CheckpointMixin.fit`` copies with edits; a RecBole that changes it changes this hash
RECBOLE_FIT_SHA256 = "ed8a1685857e0b910dd4cf66b06fa1d831d656cd99f4ff80d992557654382fe7"


class CheckpointMixin:
    """RecBole's ``Trainer`` checkpointing made safe (see the module docstring). Put it before
    a RecBole trainer class: ``class T(CheckpointMixin, Trainer)``."""

    def __init__(self, config, model):
        super().__init__(config, model)
        name = [os.path.join(self.checkpoint_dir, f"{config['model']}-{run_stamp()}.pth")]
        from recbole_cllm4rec.distributed import is_distributed

        if is_distributed():  # every rank uses rank 0's name
            import torch.distributed as dist

            dist.broadcast_object_list(name, src=0)
        self.saved_model_file = name[0]
        self.resumed_from = None
        if self._is_writer():
            remove_stale_temporaries(self.checkpoint_dir)

    @property
    def last_model_file(self):
        return last_state_file(self.saved_model_file)

    # hooks for trainers with more state (CLLM4Rec's pretraining optimisers and progress)
    def _extra_checkpoint_state(self):
        return {}

    def _load_extra_checkpoint_state(self, checkpoint):
        pass

    def _is_writer(self):
        return self.config["single_spec"] or self.config["local_rank"] == 0

    def _checkpoint_state(self, epoch, kind):
        return {
            "config": self.config,
            "identity": identity(self.config, self.model),
            "kind": kind,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "best_valid_result": dict(self.best_valid_result) if self.best_valid_result else None,
            "best_file": os.path.basename(self.saved_model_file),
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "saved_at": time(),
            **self._extra_checkpoint_state(),
        }

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's best checkpoint (same keys, same meaning), written atomically."""
        if not self._is_writer():
            return
        path = kwargs.pop("saved_model_file", self.saved_model_file)
        atomic_save(self._checkpoint_state(epoch, "best"), path)
        if verbose:
            from recbole.utils import set_color

            self.logger.info(set_color("Saving current", "blue") + f": {path}")

    def save_last_state(self, epoch, stage=None):
        """The state after a finished epoch (or pretraining stage): what ``resume_file`` goes on
        from. ``epoch`` is the last finished finetuning epoch (-1 before finetuning)."""
        if not self._is_writer():
            return
        state = self._checkpoint_state(epoch, "last")
        state["stage"] = stage
        atomic_save(state, self.last_model_file)

    def resume_checkpoint(self, resume_file):
        """Go on from a best or last-state checkpoint of a run of this model, dataset and split.
        The source file is only read: this run writes its own best and last files."""
        resume_file = str(resume_file)
        checkpoint = load_checkpoint(resume_file, self.device)
        check_identity(checkpoint, identity(self.config, self.model), resume_file)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint.get("best_valid_result")
        try:
            self.model.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as err:
            raise CheckpointError(
                f"cannot resume from '{resume_file}': its tables do not fit this model: {str(err).splitlines()[0]}"
            ) from None
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if isinstance(checkpoint.get("torch_rng"), torch.Tensor) and self.config["single_spec"]:
            torch.set_rng_state(checkpoint["torch_rng"])  # (DDP ranks keep their own streams)
        self._load_extra_checkpoint_state(checkpoint)
        self.resumed_from = resume_file
        # This run's best file starts as the source run's best model, so testing after a resumed
        # run that never improves evaluates that model, not the current state.
        best = checkpoint
        if checkpoint.get("kind") == "last" and checkpoint["epoch"] < 0:
            best = None  # stopped in pretraining: no best model yet
        elif checkpoint.get("kind") == "last" and checkpoint.get("best_file"):
            best_path = os.path.join(os.path.dirname(resume_file), checkpoint["best_file"])
            if os.path.isfile(best_path):
                best = load_checkpoint(best_path, self.device)
            else:
                best = None
                self.best_valid_score = -np.inf if self.valid_metric_bigger else np.inf
                self.best_valid_result = None
                self.logger.warning(
                    f"the best checkpoint {best_path} of the resumed run is gone: "
                    f"the best model is chosen again from here"
                )
        if best is not None and self._is_writer():
            atomic_save(
                {**best, "identity": identity(self.config, self.model), "config": self.config}, self.saved_model_file
            )
        sibling = last_state_file(resume_file)
        if checkpoint.get("kind") != "last" and os.path.isfile(sibling):
            self.logger.warning(
                f"resuming from the best checkpoint (epoch {checkpoint['epoch']}); "
                f"{sibling} holds a later state: resume_file={sibling} goes on from there"
            )
        self.logger.info(
            f"Checkpoint {resume_file} loaded. Resume training from epoch {self.start_epoch}; "
            f"this run writes {self.saved_model_file}"
        )

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole 1.2.1's ``Trainer.fit`` with a last-state checkpoint after every epoch, and a
        validation after the last epoch too. A copy: ``RECBOLE_FIT_SHA256`` pins the source it
        was copied from, and a test fails when an installed RecBole's differs."""
        from recbole.utils import dict2str, early_stopping, set_color

        if saved and self.start_epoch >= self.epochs and self.resumed_from is None:
            self._save_checkpoint(-1, verbose=verbose)

        self.eval_collector.data_collect(train_data)
        if self.config["train_neg_sample_args"].get("dynamic", False):
            train_data.get_model(self.model)
        valid_step = 0

        for epoch_idx in range(self.start_epoch, self.epochs):
            training_start_time = time()
            train_loss = self._train_epoch(train_data, epoch_idx, show_progress=show_progress)
            self.train_loss_dict[epoch_idx] = sum(train_loss) if isinstance(train_loss, tuple) else train_loss
            training_end_time = time()
            train_loss_output = self._generate_train_loss_output(
                epoch_idx, training_start_time, training_end_time, train_loss
            )
            if verbose:
                self.logger.info(train_loss_output)
            self._add_train_loss_to_tensorboard(epoch_idx, train_loss)
            self.wandblogger.log_metrics(
                {"epoch": epoch_idx, "train_loss": train_loss, "train_step": epoch_idx}, head="train"
            )

            if self.eval_step <= 0 or not valid_data:
                if saved:
                    self._save_checkpoint(epoch_idx, verbose=verbose)
                    self.save_last_state(epoch_idx)
                continue
            # RecBole skips validating the last epoch when epochs is no multiple of eval_step,
            # which leaves no best model at all in a short run (--epochs=3 with eval_step 5).
            if (epoch_idx + 1) % self.eval_step != 0 and epoch_idx + 1 != self.epochs:
                if saved:
                    self.save_last_state(epoch_idx)
                continue
            valid_start_time = time()
            valid_score, valid_result = self._valid_epoch(valid_data, show_progress=show_progress)
            self.best_valid_score, self.cur_step, stop_flag, update_flag = early_stopping(
                valid_score,
                self.best_valid_score,
                self.cur_step,
                max_step=self.stopping_step,
                bigger=self.valid_metric_bigger,
            )
            valid_end_time = time()
            valid_score_output = (
                set_color("epoch %d evaluating", "green")
                + " ["
                + set_color("time", "blue")
                + ": %.2fs, "
                + set_color("valid_score", "blue")
                + ": %f]"
            ) % (epoch_idx, valid_end_time - valid_start_time, valid_score)
            valid_result_output = set_color("valid result", "blue") + ": \n" + dict2str(valid_result)
            if verbose:
                self.logger.info(valid_score_output)
                self.logger.info(valid_result_output)
            self.tensorboard.add_scalar("Vaild_score", valid_score, epoch_idx)
            self.wandblogger.log_metrics({**valid_result, "valid_step": valid_step}, head="valid")

            if update_flag:
                self.best_valid_result = valid_result
                if saved:
                    self._save_checkpoint(epoch_idx, verbose=verbose)
            if saved:
                self.save_last_state(epoch_idx)

            if callback_fn:
                callback_fn(epoch_idx, valid_score)

            if stop_flag:
                stop_output = (
                    f"Finished training, best eval result in epoch {epoch_idx - self.cur_step * self.eval_step}"
                )
                if verbose:
                    self.logger.info(stop_output)
                break

            valid_step += 1

        self._add_hparam_to_tensorboard(self.best_valid_score)
        return self.best_valid_score, self.best_valid_result

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """RecBole's evaluate, loading the checkpoint safely and only when it is this run's kind."""
        if not eval_data:
            return
        if load_best_model:
            from recbole_cllm4rec.distributed import is_distributed

            if is_distributed():
                import torch.distributed as dist

                dist.barrier()  # rank 0 has finished writing the checkpoint every rank now reads
            checkpoint_file = model_file or self.saved_model_file
            checkpoint = load_checkpoint(checkpoint_file, self.device)
            check_identity(checkpoint, identity(self.config, self.model), checkpoint_file, "evaluate")
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)


_wrapped = {}


def reliable(trainer_class):
    """``trainer_class`` with ``CheckpointMixin``; RecBole trainers that run their own fit loop
    keep it (they get the safe names, writes and loads, not the per-epoch last state)."""
    from recbole.trainer import Trainer

    if (
        not isinstance(trainer_class, type)
        or not issubclass(trainer_class, Trainer)
        or issubclass(trainer_class, CheckpointMixin)
    ):
        return trainer_class
    if trainer_class not in _wrapped:
        namespace = {"__module__": trainer_class.__module__, "__doc__": trainer_class.__doc__}
        if trainer_class.fit is not Trainer.fit:
            namespace["fit"] = trainer_class.fit
        _wrapped[trainer_class] = type(trainer_class.__name__, (CheckpointMixin, trainer_class), namespace)
    return _wrapped[trainer_class]
