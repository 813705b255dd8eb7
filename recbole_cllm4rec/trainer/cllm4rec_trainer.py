"""CLLM4Rec's staged schedule on top of RecBole's Trainer:

1. content warm-up: the content LM alone (no MR);
2. ``pretrain_epochs`` x (collaborative epoch with MR to content, content epoch with MR to
   collaborative), alternating per epoch as in the authors' code;
3. recommendation tables initialised from the collaborative ones, then RecBole's own fit loop
   (early stopping, best-model selection, checkpoints), where each epoch is a recommendation
   epoch followed by a content epoch with MR to the recommendation tables.

The trainer orchestrates only: every loss comes from the model.

Finetuning batches are users (``finetune_batch_size``, each with a fresh masked history), so
``_train_epoch`` draws them from the corpus and ignores ``train_data``: RecBole's
``train_batch_size`` does not apply. ``CLLM4Rec.calculate_loss`` gives the same loss on the users
of a RecBole interaction batch, so RecBole's stock ``Trainer`` can train the model too.
"""

import math
import os
from time import time

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import set_color
from tqdm import tqdm

from recbole_cllm4rec.batching import length_batches
from recbole_cllm4rec.checkpoint import CheckpointError, CheckpointMixin, atomic_save, refuse_non_finite, run_stamp
from recbole_cllm4rec.distributed import all_reduce_sum, rank, shard, sum_gradients
from recbole_cllm4rec.validation import existing_file


class CLLM4RecTrainer(CheckpointMixin, Trainer):
    def __init__(self, config, model):
        super().__init__(config, model)
        pretrain_lr = config["pretrain_learning_rate"]
        # RecBole's fit loop steps self.optimizer: give it the recommendation tables only.
        self.optimizer = self._build_optimizer(params=model.optimizer_groups("rec", config["lora_learning_rate"]))
        self.collab_optimizer = self._build_optimizer(params=model.parameters_of("collab"), learning_rate=pretrain_lr)
        self.content_optimizer = self._build_optimizer(params=model.parameters_of("content"), learning_rate=pretrain_lr)
        # content epochs inside finetuning (finetune_content_epochs) step the content tables at the finetuning lr
        self.finetune_content_optimizer = self._build_optimizer(params=model.parameters_of("content"))
        self.pretrain_batch_size = config["pretrain_batch_size"]
        self.max_batch_tokens = config["max_batch_tokens"]
        self.stage_stats = {}
        # pretraining epochs finished (a last-state checkpoint is written after each one)
        self.pretrain_progress = {"warmup": 0, "collab": 0, "content": 0, "finished": False}

    # ---- one step and one epoch of a stage -------------------------------------------------
    def _step(self, optimizer, params, loss_fn, examples, lm_units=len):
        """One optimiser step on a global batch. Under DDP each rank takes its shard and weighs
        its losses by its share of the batch's units (target tokens for the LM term, documents
        for MR), so the summed gradients are those of one process on the whole batch."""
        local = shard(examples)
        units, docs = lm_units(local), len(local)
        all_units, all_docs = all_reduce_sum([units, docs])
        optimizer.zero_grad()
        lm = mr = 0.0
        if docs:
            lm_loss, mr_loss = loss_fn(local)
            (lm_loss * (units / all_units if all_units else 0.0) + mr_loss * (docs / all_docs)).backward()
            lm, mr = lm_loss.item() * docs, mr_loss.item() * docs
        sum_gradients(params)
        if self.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, **self.clip_grad_norm)
        optimizer.step()
        return lm, mr

    def _epoch(self, stage, batches, step, show_progress):
        """Run ``step(batch) -> (summed lm, summed mr)`` over the batches; log the means."""
        self.model.train()
        n = sum(len(b) for b in batches)
        if show_progress:
            batches = tqdm(batches, desc=set_color(f"{stage:<13}", "pink"), ncols=100)
        start, tokens, lm_total, mr_total = time(), self.model.tokens_processed, 0.0, 0.0
        for batch in batches:
            lm, mr = step(batch)
            lm_total, mr_total = lm_total + lm, mr_total + mr
        tokens, lm_total, mr_total = all_reduce_sum([self.model.tokens_processed - tokens, lm_total, mr_total])
        return self._record(stage, start, int(tokens), lm_total / n, mr_total / n)

    def lm_batches(self, docs):
        """An LM epoch's global batches of document indices (length-bucketed, shuffled)."""
        lengths = [len(d.prompt) + len(d.main) for d in docs]
        return length_batches(lengths, self.pretrain_batch_size, self.model.rng, self.max_batch_tokens)

    def recommendation_batches(self, users):
        """A finetuning epoch's global batches of positions in ``users``."""
        lengths = [len(self.model.corpus.histories[u]) for u in users]
        return length_batches(lengths, self.config["finetune_batch_size"], self.model.rng, self.max_batch_tokens)

    def _lm_epoch(self, stage, docs, loss_fn, optimizer, show_progress):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        return self._epoch(
            stage,
            self.lm_batches(docs),
            lambda batch: self._step(optimizer, params, loss_fn, [docs[i] for i in batch], self.model.lm_target_count),
            show_progress,
        )

    def _record(self, stage, start, tokens, lm, mr):
        seconds = time() - start
        stats = self.stage_stats.setdefault(stage, {"epochs": 0, "tokens": 0, "seconds": 0.0, "losses": []})
        stats["epochs"] += 1
        stats["tokens"] += tokens
        stats["seconds"] += seconds
        stats["losses"].append((lm, mr))
        self.logger.info(
            set_color(f"{stage} epoch {stats['epochs']}", "green")
            + f" [time: {seconds:.2f}s, lm loss: {lm:.4f}, mr: {mr:.4f}, tokens/s: {tokens / seconds:.0f}]"
        )
        return lm, mr

    def collaborative_epoch(self, show_progress=False):
        docs = self.model.corpus.collaborative_corpus(self.model.rng)
        return self._lm_epoch(
            "collaborative", docs, self.model.collaborative_loss, self.collab_optimizer, show_progress
        )

    def content_epoch(self, partner, optimizer, show_progress=False):
        """A content epoch with MR towards ``partner``: none in the warm-up, the tables of the
        stage's item LM after it (collaborative in pretraining, recommendation in finetuning)."""
        return self._lm_epoch(
            f"content({partner or 'no MR'})",
            self.model.corpus.content_corpus(),
            lambda b: self.model.content_loss(b, partner),
            optimizer,
            show_progress,
        )

    # ---- pretraining ----------------------------------------------------------------------------
    def pretrain(self, saved=True, show_progress=False):
        """The pretraining stages, each epoch followed by a last-state checkpoint; a run resumed
        from one goes on with the first unfinished epoch."""
        config, model, done = self.config, self.model, self.pretrain_progress
        if done["finished"]:
            return
        if config["pretrained_file"] and not (done["warmup"] or done["collab"]):
            self._load_pretrained(config["pretrained_file"])
            return
        if model.use_content:
            while done["warmup"] < config["content_warmup_epochs"]:
                self.content_epoch(None, self.content_optimizer, show_progress)
                done["warmup"] += 1
                self._save_stage(saved, f"content warm-up {done['warmup']}")
        for round_ in range(config["pretrain_epochs"]):
            if done["collab"] <= round_:
                self.collaborative_epoch(show_progress)
                done["collab"] = round_ + 1
                self._save_stage(saved, f"collaborative {done['collab']}")
            if model.use_content and done["content"] <= round_:
                self.content_epoch("collab", self.content_optimizer, show_progress)
                done["content"] = round_ + 1
                self._save_stage(saved, f"content {done['content']}")
        model.init_rec_from_collab()
        done["finished"] = True
        if saved and rank() == 0 and (config["pretrain_epochs"] or config["content_warmup_epochs"]):
            self._save_stage(saved, "pretrained")
            path = os.path.join(
                self.checkpoint_dir, f"{config['model']}-{config['dataset']}-pretrained-{run_stamp()}.pth"
            )
            atomic_save({"state_dict": model.state_dict(), "other_parameter": model.other_parameter()}, path)
            self.logger.info(set_color("pretrained tables saved", "blue") + f": {path} (reuse: pretrained_file={path})")

    def _save_stage(self, saved, stage):
        if saved:
            self.save_last_state(-1, stage=stage)

    # ---- checkpoints: the pretraining optimisers and progress go along (CheckpointMixin hooks) --
    def _extra_checkpoint_state(self):
        optimizers = {
            "collab": self.collab_optimizer.state_dict(),
            "content": self.content_optimizer.state_dict(),
            "finetune_content": self.finetune_content_optimizer.state_dict(),
        }
        return {"optimizers": optimizers, "pretrain_progress": dict(self.pretrain_progress)}

    def _load_extra_checkpoint_state(self, checkpoint):
        optimizers = checkpoint.get("optimizers") or {}
        if "collab" in optimizers:
            self.collab_optimizer.load_state_dict(optimizers["collab"])
        if "content" in optimizers:
            self.content_optimizer.load_state_dict(optimizers["content"])
        if "finetune_content" in optimizers:
            self.finetune_content_optimizer.load_state_dict(optimizers["finetune_content"])
        progress = checkpoint.get("pretrain_progress")
        if progress is not None:
            self.pretrain_progress = dict(progress)
        elif checkpoint["epoch"] >= 0:  # a checkpoint from finetuning: pretraining is in it
            self.pretrain_progress["finished"] = True

    def _load_pretrained(self, path):
        existing_file("pretrained_file", path)  # checked with the config already; a trainer made directly
        try:  # tables and plain values only: no pickled object is ever needed here
            saved = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as err:  # noqa: BLE001
            raise CheckpointError(
                f"pretrained_file '{path}' is not a plain tables file ({str(err).splitlines()[0]}); "
                f"use one this package's pretraining wrote"
            ) from None
        if not isinstance(saved, dict) or "state_dict" not in saved:
            raise CheckpointError(f"pretrained_file '{path}' holds no state_dict")
        refuse_non_finite(saved, f"pretrained_file '{path}'")
        self.model.load_other_parameter(saved.get("other_parameter"))
        self.model.load_state_dict(saved["state_dict"])
        self.model.init_rec_from_collab()
        self.logger.info(f"pretrained collaborative and content tables loaded from {path}")

    # ---- finetuning: RecBole's fit loop, one recommendation + one content epoch per epoch ----
    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        if self.start_epoch == 0:  # a run resumed in finetuning has its pretraining in the checkpoint
            self.pretrain(saved, show_progress)
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

    def _set_epoch_learning_rate(self, epoch_idx):
        """cosine: each group's base lr x (1 + cos(pi * epoch / epochs)) / 2 for this epoch;
        a function of the epoch index alone, so a resumed run gets the same rate."""
        if self.config["learning_rate_schedule"] != "cosine":
            return
        factor = 0.5 * (1 + math.cos(math.pi * epoch_idx / self.epochs))
        for group in self.optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
            group["lr"] = group["base_lr"] * factor

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        # masks_per_epoch > 1: each user appears that many times, each time with a fresh mask
        users = np.tile(self.model.corpus.users_with_history(), self.config["masks_per_epoch"])
        batches = self.recommendation_batches(users)
        params = self.model.parameters_of("rec")
        self._set_epoch_learning_rate(epoch_idx)

        def step(batch):
            # Every rank draws the whole batch's masks (one random stream on all ranks), then
            # trains on its shard of the (history, targets) pairs.
            examples = self.model.recommendation_examples(users[batch])
            return self._step(self.optimizer, params, self.model.rec_loss, examples)

        losses = self._epoch("recommend", batches, step, show_progress)
        if self.model.use_content and self.config["finetune_content_epochs"]:
            for _ in range(self.config["finetune_content_epochs"]):
                self.content_epoch("rec", self.finetune_content_optimizer, show_progress)
        return losses
