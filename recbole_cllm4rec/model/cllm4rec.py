r"""
CLLM4Rec
################################################
Reference:
    Yaochen Zhu, Liang Wu, Qi Guo, Liangjie Hong and Jundong Li. "Collaborative Large Language
    Model for Recommender Systems." In WWW 2024.

Reference code:
    https://github.com/yaochenzhu/LLM4Rec (the switches below reproduce its behaviour where it
    departs from the paper; see properties/model/CLLM4Rec.yaml)

A frozen causal LM reads atomic ``user_u`` / ``item_j`` words whose embeddings live in three
pairs of trainable tables: collaborative (U^l, V^l), content (U^c, V^c) and recommendation
(U^r, V^r, initialised from U^l, V^l). Only these tables (and, with ``item_bias``, one bias per
item head) train; the backbone, its vocabulary embeddings and its vocabulary head never change.
The defaults read the LM differently from the paper (first ``readout_layers`` layers, mean over
the history's item positions, scaled logits, ID rows scaled on input); the paper's read-out is
properties/preset/CLLM4Rec-paper.yaml.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import nn
from torch.utils.checkpoint import checkpoint

from recbole_cllm4rec.batching import length_batches, pad_batch
from recbole_cllm4rec.data.corpus import CorpusBuilder
from recbole_cllm4rec.data.text import entity_texts
from recbole_cllm4rec.llm.backbone import (
    adapters_active,
    attach_lora,
    attention_implementation,
    autocast_dtype,
    decoder_layer_count,
    first_layers,
    load_causal_lm,
    randomly_initialised,
)
from recbole_cllm4rec.model import cold_items
from recbole_cllm4rec.validation import ConfigValueError, check_model_config

# The authors sum the MR term over each process's batch of 20 documents while the LM loss is a
# token mean; ``mr_weight`` keeps their units: MR = mr_weight * 20 * mean over documents.
MR_REFERENCE_BATCH = 20
VOCAB_LOGIT_CHUNK = 1024  # target positions per chunk of vocabulary logits


def _vocab_nll_sum(hidden, weight, targets):
    return F.cross_entropy(hidden @ weight.t(), targets, reduction="sum")


class CLLM4Rec(GeneralRecommender):
    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self._check_config(config)
        self.mask_ratio = config["mask_ratio"]
        self.mr_weight = config["mr_weight"]
        self.mr_on_targets = config["mr_on_targets"]
        self.finetune_target = config["finetune_target"]
        self.masked_target_weight = config["masked_target_weight"]
        self.predict_first_main_token = config["predict_first_main_token"]
        self.llm_batch_size = config["llm_batch_size"]
        self.eval_prompt_draws = config["eval_prompt_draws"]
        self.max_batch_tokens = config["max_batch_tokens"]
        self.seed = config["seed"]
        self.llm_path = config["llm_path"]
        self.use_content = config["use_content"]
        self.readout = config["readout"]
        self.id_input_scale = config["id_input_scale"]
        self.softmax_items = config["softmax_items"]
        self.tokens_processed = 0  # non-padding tokens through the backbone, for tokens/s

        self.backbone, tokenizer = load_causal_lm(config["llm_path"], config["llm_cache_dir"])
        if config["llm_weights"] == "random":
            self.backbone = randomly_initialised(self.backbone, config["seed"])
        self.backbone.requires_grad_(False)
        self.backbone.set_attn_implementation(attention_implementation(config["attn_implementation"], config["device"]))
        if not config["backbone_dropout"]:
            self.backbone.eval()  # frozen weights; dropout here only adds noise (authors' quirk)
        self.backbone_dropout = config["backbone_dropout"]
        self.corpus = CorpusBuilder(dataset, tokenizer, config)
        self.autocast = autocast_dtype(config["autocast"], torch.device(config["device"]))
        self.rng = np.random.default_rng(config["seed"])

        depth = decoder_layer_count(self.backbone.base_model)
        self.readout_layers = config["readout_layers"]
        if self.readout_layers > depth:  # a setting's mistake, known once the backbone is loaded
            raise ConfigValueError(
                f"CLLM4Rec config 'readout_layers: {self.readout_layers}' exceeds the backbone's "
                f"{depth} layers; use 0 (all) or a number up to {depth}"
            )
        # LoRA on the layers the recommendation LM reads, active in its passes only: the
        # collaborative and content LMs keep the frozen backbone exactly as loaded.
        self.lora = nn.ModuleList()
        if config["lora_rank"]:
            self.lora = attach_lora(
                self.backbone.base_model,
                self.readout_layers,
                config["lora_rank"],
                config["lora_alpha"],
                list(config["lora_targets"]),
            )
        hidden = self.backbone.config.hidden_size
        # Scaled dot product: the final-normed states have norm ~sqrt(hidden) x the norm's gain
        # (43 for SmolLM2), so raw dot products made each Adam step on a row move its logit by ~2.
        self.logit_scale = hidden**-0.5 if config["scaled_item_logits"] else 1.0
        self.user_collab, self.item_collab = self._tables(hidden, config["id_init_std"])
        self.user_content, self.item_content = self._tables(hidden, config["id_init_std"])
        self.user_rec, self.item_rec = self._tables(hidden, config["id_init_std"])
        # Item heads' biases, started at the training items' log-frequency (the unigram prior),
        # so the dot product only has to carry what popularity does not.
        self.item_bias = nn.ParameterDict()
        if config["item_bias"]:
            prior = self._log_popularity()
            self.item_bias.update({kind: nn.Parameter(prior.clone()) for kind in ("collab", "rec")})
        # Item rows that read the item's text: row_j = ID row_j + W_kind . text state_j, where the
        # text state is what the frozen LM makes of the item's text. Items with few interactions
        # (or none) borrow what their text shares with others; the ID part starts at zero.
        self.text_projection = nn.ModuleDict()
        self.register_buffer("item_text_states", torch.zeros(0), persistent=False)
        if config["item_text_rows"] or config["cold_item_rows"] == "text_map":
            self.item_text_states = self._text_states(
                dataset,
                "item",
                config["item_text"],
                ("item_text_rows", "use item_text_rows: False and a cold_item_rows other than text_map"),
            )
        if config["item_text_rows"]:
            projection = nn.Linear(self.item_text_states.shape[1], hidden, bias=False)
            nn.init.normal_(projection.weight, std=config["id_init_std"])
            self.text_projection.update(
                {"collab": projection, "rec": nn.Linear(projection.in_features, hidden, bias=False)}
            )
            with torch.no_grad():
                self.item_collab.weight.zero_()
        # softmax_items: trained keeps items without a training interaction out of every training
        # softmax, so they are never pushed down as negatives (their rows stay as built).
        self.register_buffer("trained_items", torch.from_numpy(self._item_counts() > 0), persistent=False)
        self.init_rec_from_collab()
        # A free user row can memorise the user's training items (the target) instead of
        # learning what the visible items imply; frozen, it keeps its pretrained value.
        self.user_rec.weight.requires_grad_(config["train_rec_user_rows"])
        self.cold_item_rows = config["cold_item_rows"]
        self.text_prior_count = float(config["text_prior_count"] or 0)
        self.user_text_prior_count = float(config["user_text_prior_count"] or 0)
        self.cold_user_states = config["cold_user_states"] or "trained"
        self.register_buffer("user_text_states", torch.zeros(0), persistent=False)
        if self.cold_user_states == "text_map":
            self.user_text_states = self._text_states(
                dataset, "user", config["user_text"], ("cold_user_states: text_map", "use cold_user_states: trained")
            )
        if config["content_init"] == "text":
            with torch.no_grad():
                self.item_content.weight.copy_(cold_items.text_rows(self, dataset, config["item_text"]))
        self._ranking_rows = None  # (rows,) cached while evaluating; see cold_items.ranking_rows
        self._user_map = None  # (weights, intercept) cached while evaluating; see cold_items.fit_user_map

    # ---- set-up --------------------------------------------------------------------------
    @staticmethod
    def _check_config(config):
        check_model_config("CLLM4Rec", config)
        if config["lora_rank"] and not config["lora_targets"]:
            raise ConfigValueError(f"lora_rank: {config['lora_rank']} adapts lora_targets, which is empty: name them")
        if (
            config["cold_item_rows"] in ("content", "content_map")
            and not config["use_content"]
            and config["content_init"] == "random"
        ):
            raise ConfigValueError(
                f"cold_item_rows: {config['cold_item_rows']} reads content rows, which stay random "
                f"without the content LM: set use_content: True or content_init: text"
            )

    def _tables(self, hidden, std):
        users, items = nn.Embedding(self.n_users, hidden), nn.Embedding(self.n_items, hidden)
        # Small init: at the vocabulary's scale the first item loss was 22.6, vs 7.4 uniform.
        nn.init.normal_(users.weight, std=std)
        nn.init.normal_(items.weight, std=std)
        return users, items

    def _item_counts(self):
        """Training interactions per item (RecBole's padding item 0 has none)."""
        return np.bincount(np.concatenate(self.corpus.histories), minlength=self.n_items)

    def _log_popularity(self):
        return torch.log_softmax(torch.as_tensor(np.log1p(self._item_counts()), dtype=torch.float32), 0)

    @torch.no_grad()
    def _text_states(self, dataset, kind, template, missing_hint):
        """[n_items or n_users, H]: each entity's text (``item_text`` / ``user_text``) read by the
        whole frozen backbone, its final states averaged over the text's tokens, then standardised
        over the entities and scaled to norm ~1; zeros where there is no text. The text is
        metadata, not interactions, so cold items and users get their state too."""
        if not template:
            raise ConfigValueError(
                f"{missing_hint[0]} needs {kind} texts, but dataset '{dataset.dataset_name}' has no "
                f"{kind}_text template: set {kind}_text in its yaml, or {missing_hint[1]}"
            )
        rendered = entity_texts(dataset, kind, template)
        texts = {entity: self.corpus._text_ids(text) for entity, text in enumerate(rendered)}
        entities = [entity for entity, ids in texts.items() if entity and len(ids)]
        start = len(self.corpus.start)
        device = self.backbone.get_input_embeddings().weight.device
        states = torch.zeros(len(rendered), self.backbone.config.hidden_size)
        lengths = [start + len(texts[entity]) for entity in entities]
        for batch in length_batches(lengths, self.llm_batch_size, max_tokens=self.max_batch_tokens):
            batch_entities = [entities[i] for i in batch]
            ids, mask = pad_batch(
                [np.concatenate([self.corpus.start, texts[e]]) for e in batch_entities], self.corpus.pad_id
            )
            ids, mask = torch.as_tensor(ids, device=device), torch.as_tensor(mask, device=device)
            with self.autocast_context(device):
                hidden = self.backbone.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            weights = mask.float()
            weights[:, :start] = 0  # the start token is the same in every text
            states[batch_entities] = (
                torch.einsum("bl,blh->bh", weights, hidden.float()) / weights.sum(1, keepdim=True)
            ).cpu()
        if len(entities) > 1:
            text = states[entities]
            states[entities] = (text - text.mean(0)) / text.std(0).clamp_min(1e-6) / text.shape[1] ** 0.5
        return states

    def tables(self, kind):
        return {
            "collab": (self.user_collab, self.item_collab),
            "content": (self.user_content, self.item_content),
            "rec": (self.user_rec, self.item_rec),
        }[kind]

    def _tables_and_bias(self, kind):
        bias = [self.item_bias[kind]] if kind in self.item_bias else []
        tables = [t.weight for t in self.tables(kind) if t.weight.requires_grad]
        text = list(self.text_projection[kind].parameters()) if kind in self.text_projection else []
        return tables + text + bias

    def _adapters(self, kind):
        return list(self.lora.parameters()) if kind == "rec" else []

    def parameters_of(self, kind):
        """What a stage trains: the kind's tables, its item bias, and for "rec" the LoRA adapters."""
        return self._tables_and_bias(kind) + self._adapters(kind)

    def optimizer_groups(self, kind, adapter_learning_rate):
        """``parameters_of(kind)`` as optimiser groups: the adapters at their own learning rate."""
        adapters = self._adapters(kind)
        return [{"params": self._tables_and_bias(kind)}] + (
            [{"params": adapters, "lr": adapter_learning_rate}] if adapters else []
        )

    @torch.no_grad()
    def init_rec_from_collab(self):
        self.user_rec.weight.copy_(self.user_collab.weight)
        self.item_rec.weight.copy_(self.item_collab.weight)
        if self.text_projection:
            self.text_projection["rec"].weight.copy_(self.text_projection["collab"].weight)
        if self.item_bias:
            self.item_bias["rec"].copy_(self.item_bias["collab"])

    def train(self, mode=True):
        super().train(mode)
        self._ranking_rows = self._user_map = None  # the tables may change from here on
        if not self.backbone_dropout:
            self.backbone.eval()
        return self

    # ---- the shared forward pass ------------------------------------------------------------
    def item_rows(self, kind):
        """[n_items, H]: the kind's item table, plus its map of the items' text states where
        ``item_text_rows`` is on (the item LMs only: the content LM reads its table as is)."""
        rows = self.tables(kind)[1].weight
        if kind in self.text_projection:
            rows = rows + self.text_projection[kind](self.item_text_states)
        return rows

    def embed(self, ids, kind):
        """Input embeddings [B, L, H]: vocabulary rows for vocab ids, table rows for ID words."""
        users, _ = self.tables(kind)
        uo, io = self.corpus.user_offset, self.corpus.item_offset
        is_user = (ids >= uo) & (ids < io)
        is_item = ids >= io
        vocab = self.backbone.get_input_embeddings()(torch.where(ids < uo, ids, 0))
        user_rows = users(torch.where(is_user, ids - uo, 0))
        item_rows = self.item_rows(kind)[torch.where(is_item, ids - io, 0)]
        # ID rows start small (std 0.02) for a sane first item loss, but a frozen LM reads
        # vocabulary rows of norm ~3; id_input_scale lets the ID words steer it from the start.
        id_rows = torch.where(is_user[..., None], user_rows, item_rows) * self.id_input_scale
        return torch.where((is_user | is_item)[..., None], id_rows, vocab)

    def hidden_states(self, ids, mask, kind):
        """Normed states [B, L, H] of the frozen backbone over soft+hard prompts: after every
        layer for the content LM (its vocabulary head needs them), after the first
        ``readout_layers`` for the item LMs (collaborative, recommendation)."""
        ids = torch.as_tensor(ids, device=self.device)
        mask = torch.as_tensor(mask, device=self.device)
        self.tokens_processed += int(mask.sum())
        embeds = self.embed(ids, kind)
        depth = 0 if kind == "content" else self.readout_layers
        with (
            self.autocast_context(),
            first_layers(self.backbone.base_model, depth),
            adapters_active(self.lora, kind == "rec"),
        ):
            out = self.backbone.base_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        return out.last_hidden_state.float()

    def item_logits(self, states, kind, rows=None):
        """Item-head logits [N, n_items] of ``states`` [N, H]: tied to the kind's input item
        table (or ``rows``: (table, bias)), optionally scaled and biased; RecBole's padding item
        0 never wins."""
        weight, bias = rows or (self.item_rows(kind), self.item_bias[kind] if kind in self.item_bias else None)
        logits = states @ weight.t() * self.logit_scale
        if bias is not None:
            logits = logits + bias
        logits[:, 0] = float("-inf")
        return logits

    def training_logits(self, logits):
        """The item logits a training softmax normalises over: every item, or with
        ``softmax_items: trained`` only the items with a training interaction."""
        if self.softmax_items == "trained":
            return logits.masked_fill(~self.trained_items, float("-inf"))
        return logits

    def autocast_context(self, device=None):
        """The precision every backbone pass runs in (bf16 autocast where it is fast), on
        ``device`` (default: the model's; the text states are read before the model moves)."""
        device_type = (device or self.device).type
        return torch.autocast(device_type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None)

    # ---- mutual regularisation ------------------------------------------------------------------
    @property
    def item_mr_partner(self):
        """The tables the item LMs' (collaborative, recommendation) MR pulls towards: the content
        tables when the content LM trains; else, with ``item_text_rows``, the text map ("text":
        row_j ~ N(W s_j, .), the paper's prior with the text state as the content side); none
        otherwise. The content LM's partner is the stage's (the trainer's) choice."""
        if self.use_content:
            return "content"
        return "text" if self.text_projection else None

    def mutual_regularization(self, kind, partner, users, items, n_docs):
        """mr_weight * 20 * mean over documents of sum ||e_kind - e_partner||^2 over the
        document's ID words (with multiplicity); the partner's tables are a fixed target."""
        if self.mr_weight == 0 or partner is None:
            return torch.zeros((), device=self.device)
        users = torch.as_tensor(users, dtype=torch.long, device=self.device)
        items = torch.as_tensor(items, dtype=torch.long, device=self.device)
        if partner == "text":  # ||row - W s||^2 is the ID part's norm; users have no text
            return self.mr_weight * MR_REFERENCE_BATCH * self.tables(kind)[1](items).pow(2).sum() / n_docs
        own_users, _ = self.tables(kind)
        other_users, _ = self.tables(partner)
        distance = (own_users(users) - other_users(users).detach()).pow(2).sum()
        distance = distance + (self.item_rows(kind)[items] - self.item_rows(partner)[items].detach()).pow(2).sum()
        return self.mr_weight * MR_REFERENCE_BATCH * distance / n_docs

    # ---- language-model losses (pretraining) ----------------------------------------------------
    @property
    def _first_target(self):
        return 0 if self.predict_first_main_token else 1

    def lm_target_count(self, docs):
        """Predicted tokens in ``docs``: the unit the LM losses average over."""
        return sum(max(0, len(d.main) - self._first_target) for d in docs)

    def _lm_batch(self, docs):
        """Padded ids and the (row, position) of every main-text target with its label."""
        ids, mask = pad_batch([np.concatenate([d.prompt, d.main]) for d in docs], self.corpus.pad_id)
        rows, positions, labels = [], [], []
        for row, d in enumerate(docs):
            start = len(d.prompt)
            span = np.arange(self._first_target, len(d.main))
            rows.append(np.full(len(span), row))
            positions.append(start + span - 1)  # the state before a token predicts it
            labels.append(d.main[span])
        return ids, mask, np.concatenate(rows), np.concatenate(positions), np.concatenate(labels)

    def collaborative_loss(self, docs):
        """Next-item LM over ``user_u has interacted with`` | items, softmax over items only,
        head tied to the collaborative item table; plus MR towards ``item_mr_partner``."""
        ids, mask, rows, positions, labels = self._lm_batch(docs)
        hidden = self.hidden_states(ids, mask, "collab")[rows, positions]
        logits = self.training_logits(self.item_logits(hidden, "collab"))
        targets = torch.as_tensor(labels - self.corpus.item_offset, device=self.device)
        lm = F.cross_entropy(logits, targets)
        items = np.concatenate([d.main for d in docs]) - self.corpus.item_offset
        mr = self.mutual_regularization("collab", self.item_mr_partner, [d.user for d in docs], items, len(docs))
        return lm, mr

    def content_loss(self, docs, partner="collab"):
        """Next-token LM over prompt | text, scored against the frozen vocabulary head, in
        chunks of target positions so B x L x V logits never exist at once."""
        ids, mask, rows, positions, labels = self._lm_batch(docs)
        hidden = self.hidden_states(ids, mask, "content")[rows, positions]
        weight = self.backbone.get_output_embeddings().weight
        targets = torch.as_tensor(labels, device=self.device)
        total = hidden.new_zeros(())
        for start in range(0, len(targets), VOCAB_LOGIT_CHUNK):
            part = slice(start, start + VOCAB_LOGIT_CHUNK)
            # recompute each chunk's logits in backward instead of keeping them all
            total = total + checkpoint(_vocab_nll_sum, hidden[part], weight, targets[part], use_reentrant=False)
        lm = total / max(len(targets), 1)
        users = [d.user for d in docs if d.user]
        items = [d.item for d in docs if d.item]
        mr = self.mutual_regularization("content", partner, users, items, len(docs))
        return lm, mr

    # ---- recommendation (finetuning and ranking) -----------------------------------------------
    def prompt_states(self, users, visible):
        """The recommendation prompts' read-out [B, H] over the ``visible`` histories: the
        last state (paper), or the mean state over the history's item positions ("mean"),
        where each item word's own row stays in the residual stream. A prompt with no
        visible item reads out zeros, so the item bias alone ranks for it."""
        prompts = [self.corpus.rec_prompt(u, v) for u, v in zip(users, visible)]
        ids, mask = pad_batch(prompts, self.corpus.pad_id)
        hidden = self.hidden_states(ids, mask, "rec")
        if self.readout == "last":
            last = torch.as_tensor(mask.sum(1) - 1, device=self.device)
            return hidden[torch.arange(len(prompts), device=self.device), last]
        is_item = torch.as_tensor((ids >= self.corpus.item_offset) & (mask > 0), device=self.device)
        weights = is_item.float() / is_item.sum(1, keepdim=True).clamp(min=1)
        return torch.einsum("bl,blh->bh", weights, hidden)

    def rec_scores(self, users, visible, rows=None):
        """Item scores [B, n_items] from the read-out of the recommendation prompt."""
        return self.item_logits(self.prompt_states(users, visible), "rec", rows)

    def recommendation_examples(self, users):
        """(user, visible history, target items) per user: a fresh random mask each call."""
        examples = []
        for u in users:
            shown, masked = self.corpus.split_history(u, self.rng, self.mask_ratio)
            targets = masked if self.finetune_target == "masked" else self.corpus.histories[u]
            examples.append((u, shown, targets))
        return examples

    def rec_loss(self, examples):
        """Multinomial likelihood of the held-out items given the masked history, summed over
        targets and averaged over users (Multi-VAE style); plus MR towards the content tables."""
        users = np.asarray([u for u, _, _ in examples])
        visible = [v for _, v, _ in examples]
        targets = [t for _, _, t in examples]
        log_probs = F.log_softmax(self.training_logits(self.rec_scores(users, visible)), dim=1)
        target_weights = torch.zeros_like(log_probs)
        for row, (items, shown) in enumerate(zip(targets, visible)):
            target_weights[row, torch.as_tensor(items, dtype=torch.long, device=self.device)] = 1.0
            if self.finetune_target == "all" and self.masked_target_weight != 1.0:
                hidden = np.setdiff1d(items, shown, assume_unique=True)
                target_weights[row, torch.as_tensor(hidden, dtype=torch.long, device=self.device)] = (
                    self.masked_target_weight
                )
        rec = -(torch.where(target_weights > 0, log_probs * target_weights, 0.0)).sum(1).mean()
        mr_items = [np.concatenate([v, t]) if self.mr_on_targets else v for v, t in zip(visible, targets)]
        mr_users = np.repeat(users, 2)  # user_u appears twice in the prompt
        mr = self.mutual_regularization("rec", self.item_mr_partner, mr_users, np.concatenate(mr_items), len(users))
        return rec, mr

    def calculate_loss(self, interaction):
        users = torch.unique(interaction[self.USER_ID]).cpu().numpy()
        users = users[[len(self.corpus.histories[u]) > 0 for u in users]]
        return self.rec_loss(self.recommendation_examples(users))  # (multinomial, MR): RecBole sums both

    @torch.no_grad()
    def ranking_states(self, users, draws):
        """Read-out [B, H] of each user's prompt, averaged over ``draws`` orders (and, for
        histories longer than eval_max_doc_items, samples) of the history."""
        states = torch.zeros(len(users), self.backbone.config.hidden_size, device=self.device)
        for draw in range(draws):
            histories = [self.corpus.eval_history(u, self.seed, draw) for u in users]
            lengths = [len(h) for h in histories]
            for batch in length_batches(lengths, self.llm_batch_size, max_tokens=self.max_batch_tokens):
                states[batch] += self.prompt_states(users[batch], [histories[i] for i in batch])
        return states / draws

    @torch.no_grad()
    def full_sort_predict(self, interaction):
        """Item scores from the read-out averaged over ``eval_prompt_draws`` orders of each
        user's history (training saw random orders, so one fixed order is one draw of a random
        read-out; the logits are linear in the state, so this is their average too)."""
        users = interaction[self.USER_ID].cpu().numpy()
        if self._ranking_rows is None:  # cold items' rows from the content side (cold_item_rows)
            self._ranking_rows = (cold_items.ranking_rows(self),)
        states = self.ranking_states(users, self.eval_prompt_draws)
        if self.cold_user_states == "text_map":
            if self._user_map is None:
                self._user_map = cold_items.fit_user_map(self)
            states = cold_items.user_ranking_states(self, users, states, self._user_map)
        return self.item_logits(states, "rec", self._ranking_rows[0])

    def predict(self, interaction):
        scores = self.full_sort_predict(interaction)
        items = interaction[self.ITEM_ID].to(self.device)
        return scores[torch.arange(len(items), device=self.device), items]

    # ---- checkpoints: the trainable tables only -------------------------------------------
    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        for key in [k for k in state if k.startswith("backbone.")]:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict=True, assign=False):
        # The frozen backbone is rebuilt from llm_path, not stored in every checkpoint.
        full = {f"backbone.{k}": v for k, v in self.backbone.state_dict().items()}
        full.update(state_dict)
        self._ranking_rows = self._user_map = None
        return super().load_state_dict(full, strict=strict, assign=assign)

    def backbone_fingerprint(self):
        embedding = self.backbone.get_input_embeddings().weight
        return {
            "llm_path": os.path.basename(str(self.llm_path)),
            "vocab_size": int(embedding.shape[0]),
            "embedding_sum": round(float(embedding.double().sum()), 3),
        }

    def other_parameter(self):
        # The random stream (masks, item order, batch order) goes along, so a resumed run
        # continues exactly where the interrupted one was.
        return {"backbone": self.backbone_fingerprint(), "rng": self.rng.bit_generator.state}

    def load_other_parameter(self, para):
        if (para or {}).get("rng"):
            self.rng.bit_generator.state = para["rng"]
        saved = (para or {}).get("backbone")
        if saved and saved != self.backbone_fingerprint():
            raise ValueError(
                f"this checkpoint was trained on backbone {saved}, but the model was built on "
                f"{self.backbone_fingerprint()}; set llm_path to the checkpoint's backbone"
            )
