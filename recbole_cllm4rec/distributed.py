"""RecBole's multi-process path (``--nproc``, ``--world_size``, ``--ip``, ``--port``) on CPU and GPU.

RecBole 1.2.1 launches one process per rank but then assumes CUDA/NCCL, lets every rank load
the best checkpoint while rank 0 may still be writing it (under a file name each rank made up
from its own clock), pads the evaluation shards with repeated users and weights each rank's
metrics by its number of batches. ``apply`` fixes all of that in place (the trainer and
loaders only once a process turns out to be a rank of a multi-process run):

* gloo on CPU, NCCL on GPU; no ``device_ids`` for CPU ``DistributedDataParallel``;
* every rank uses rank 0's checkpoint name and loads it only after a barrier;
* evaluation shards are disjoint and cover every user exactly once; metrics are averaged over
  users (exact for the per-user metrics, Recall/NDCG/MRR/Hit/Precision/MAP, up to RecBole's
  rounding of each rank's result).

The helpers below are what a trainer that steps its own optimisers (CLLM4Rec's) needs.
"""

import os
import shutil

import torch
import torch.distributed as dist

from recbole_cllm4rec import validation


def is_distributed():
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if is_distributed() else 0


def world_size():
    return dist.get_world_size() if is_distributed() else 1


def shard(items):
    """This rank's share of a global batch: every ``world_size``-th element from ``rank``."""
    return items[rank() :: world_size()]


def all_reduce_sum(values):
    """Sum a list of numbers over ranks (the identity in one process)."""
    if not is_distributed():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return tensor.tolist()


def sum_gradients(params):
    """Sum each gradient over ranks, in one collective. A rank whose shard of the batch was
    empty contributes zeros (it must still join)."""
    if not is_distributed():
        return
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def _collective_device():
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


class ExactShardSampler(torch.utils.data.Sampler):
    """Indices ``rank, rank + world, ...`` of ``range(n)``: disjoint shards with no padding."""

    def __init__(self, n, shard_rank, shards):
        self.indices = list(range(shard_rank, n, shards))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


class _NoTensorboard:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


# ---- RecBole patches ------------------------------------------------------------------------
def _init_device(self):
    """RecBole's device set-up, with gloo when the run has no GPU."""
    config = self.final_config_dict
    gpu_id = config["gpu_id"]
    config["gpu_id"] = ",".join(map(str, gpu_id)) if isinstance(gpu_id, tuple) else str(gpu_id)
    os.environ["CUDA_VISIBLE_DEVICES"] = config["gpu_id"]
    use_cuda = bool(config["gpu_id"]) and config.get("use_gpu", True) and torch.cuda.is_available()
    # a GPU the user named that is not there: an error, not a silent CPU run
    validation.check_device_request(self.external_config_dict, config["gpu_id"], config.get("use_gpu", True), use_cuda)
    if "local_rank" not in config:
        config.update(single_spec=True, local_rank=0, device=torch.device("cuda" if use_cuda else "cpu"))
        return
    local_rank = config["local_rank"]
    _patch_for_ranks()  # a multi-process run starts here: RecBole's trainer and loaders learn DDP
    if use_cuda and len(config["gpu_id"].split(",")) < config["nproc"]:
        raise ValueError(f"nproc={config['nproc']} needs as many GPUs in gpu_id, got '{config['gpu_id']}'")
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            rank=local_rank + config["offset"],
            world_size=config["world_size"],
            init_method=f"tcp://{config['ip']}:{config['port']}",
        )
    if use_cuda:
        torch.cuda.set_device(local_rank)
        config["device"] = torch.device("cuda", local_rank)
    else:
        config["device"] = torch.device("cpu")
        if "OMP_NUM_THREADS" not in os.environ:  # ranks share the cores instead of each taking all
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // config["nproc"]))
    config["single_spec"] = False
    if local_rank != 0:
        config.update(state="error", show_progress=False, verbose=False)


def _patch_trainer():
    from recbole.trainer import trainer as trainer_module
    from torch.nn.parallel import DistributedDataParallel

    def abstract_init(self, config, model):
        self.config = config
        self.model = model
        if not config["single_spec"]:
            on_cuda = config["device"].type == "cuda"
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) if on_cuda else model
            self.distributed_model = DistributedDataParallel(
                self.model, device_ids=[config["device"].index] if on_cuda else None
            )

    trainer_module.AbstractTrainer.__init__ = abstract_init

    original_init = trainer_module.Trainer.__init__

    def trainer_init(self, config, model):
        original_init(self, config, model)
        if is_distributed():
            name = [self.saved_model_file]
            dist.broadcast_object_list(name, src=0)
            self.saved_model_file = name[0]
            if rank() != 0:  # rank 0 alone writes the tensorboard log too
                self.tensorboard.close()
                shutil.rmtree(self.tensorboard.log_dir, ignore_errors=True)
                self.tensorboard = _NoTensorboard()

    trainer_module.Trainer.__init__ = trainer_init

    original_evaluate = trainer_module.Trainer.evaluate

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if is_distributed():
            if load_best_model:
                dist.barrier()  # rank 0 has finished writing the checkpoint every rank now reads
            self._local_eval_samples = len(eval_data.sampler) if eval_data and eval_data.sampler else None
        return original_evaluate(self, eval_data, load_best_model, model_file, show_progress)

    trainer_module.Trainer.evaluate = evaluate
    original_map_reduce = trainer_module.Trainer._map_reduce

    def map_reduce(self, result, num_sample):
        # RecBole passes 4 x the number of batches; weight by the users this rank evaluated.
        local = getattr(self, "_local_eval_samples", None)
        return original_map_reduce(self, result, num_sample if local is None else local)

    trainer_module.Trainer._map_reduce = map_reduce


def _patch_dataloader():
    from recbole.data.dataloader import abstract_dataloader as module

    original_init = module.AbstractDataLoader.__init__

    def init(self, config, dataset, sampler, shuffle=False):
        original_init(self, config, dataset, sampler, shuffle)
        if config["single_spec"] or shuffle:
            return  # training shards may pad (a repeated example is harmless there)
        # Evaluation: rebuild the index sampler as disjoint, unpadded shards.
        self._DataLoader__initialized = False  # DataLoader refuses a new sampler once built
        torch.utils.data.DataLoader.__init__(
            self,
            dataset=list(range(self.sample_size)),
            batch_size=self.step,
            collate_fn=self.collate_fn,
            num_workers=config["worker"],
            shuffle=False,
            sampler=ExactShardSampler(self.sample_size, rank(), world_size()),
            generator=self.generator,
        )

    module.AbstractDataLoader.__init__ = init


def single_process_config(config):
    """A config saved by a DDP or GPU run, made loadable by one process on this machine."""
    if not config["single_spec"]:
        config["single_spec"], config["local_rank"] = True, 0
        for key in ("world_size", "nproc", "offset", "ip", "port"):
            config.final_config_dict.pop(key, None)
    if config["device"].type == "cuda" and not torch.cuda.is_available():
        config["device"], config["use_gpu"] = torch.device("cpu"), False
    return config


_ranks_patched = False


def _patch_for_ranks():
    """The trainer and dataloader patches, applied once and only when a process is a rank of a
    multi-process run; a single-process run keeps RecBole's trainer and loaders untouched."""
    global _ranks_patched
    if not _ranks_patched:
        _patch_trainer()
        _patch_dataloader()
        _ranks_patched = True


def apply():
    """Only the device set-up is patched up front (it runs in every Config and is where a rank
    first shows itself); the rest waits for a multi-process run (``_patch_for_ranks``)."""
    from recbole.config import configurator

    configurator.Config._init_device = _init_device
