r"""AlphaRec
################################################

Reference:
    Leheng Sheng, An Zhang, Yi Zhang, Yuxin Chen, Xiang Wang, Tat-Seng Chua. "Language
    Representations Can be What Recommenders Need: Findings and Potentials." ICLR 2025
    (arXiv:2407.05441, 2024).

AlphaRec learns no ID embeddings. An item starts from a frozen language-model representation
of its text, ``z_i``; a user from the mean ``z_u`` of their training items' ``z_i``. A shared
MLP (Linear-LeakyReLU-Linear) maps both into a small space, LightGCN propagates them over the
normalised user-item graph (mean over layers), and the score is the cosine similarity, trained
with InfoNCE against sampled negatives. A free-text intention, embedded by the same LM and
projected by the same MLP, can be blended into a user's vector at inference.

``item_representation: id`` swaps ``z_i`` for a learned ID embedding (users stay the mean of
their items), the ablation that isolates what the language representation contributes.
"""

import warnings

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import nn

from recbole_cllm4rec.model.text_vectors import item_text_vectors

BITMAP_LIMIT = 2**26  # user x item pairs up to which training positives are kept as a bitmap (64 MB)


def sparse_tensor(matrix):
    """scipy sparse matrix -> coalesced torch sparse COO tensor (float32)."""
    coo = matrix.tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    values = torch.from_numpy(coo.data.astype(np.float32))
    return torch.sparse_coo_tensor(indices, values, coo.shape, check_invariants=True).coalesce()


class SymmetricSparseMM(torch.autograd.Function):
    """``adjacency @ x`` for a symmetric sparse ``adjacency``: the gradient is ``adjacency @ g``
    again, which spares autograd the transpose it would otherwise build on every backward pass
    (about 8x faster with a CSR matrix on a CPU)."""

    @staticmethod
    def forward(ctx, adjacency, x):
        ctx.adjacency = adjacency
        return adjacency @ x

    @staticmethod
    def backward(ctx, grad):
        return None, ctx.adjacency @ grad


def normalized_adjacency(interactions):
    r"""LightGCN's :math:`D^{-1/2} A D^{-1/2}` over the bipartite graph of ``interactions``
    (users x items, binary), as a ``(n_users + n_items)``-square scipy CSR matrix."""
    adjacency = sp.bmat([[None, interactions], [interactions.T, None]], format="csr")
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree, dtype=np.float64)
    inv_sqrt[degree > 0] = degree[degree > 0] ** -0.5  # isolated nodes (padding ids) stay zero
    scale = sp.diags(inv_sqrt)
    return (scale @ adjacency @ scale).tocsr().astype(np.float32)


def row_mean_operator(interactions):
    """Users x items matrix whose product with item vectors gives each user's mean item vector."""
    counts = np.asarray(interactions.sum(axis=1)).ravel()
    inv = np.zeros_like(counts, dtype=np.float64)
    inv[counts > 0] = 1.0 / counts[counts > 0]
    return (sp.diags(inv) @ interactions).tocsr().astype(np.float32)


class AlphaRec(GeneralRecommender):
    r"""Language representations + MLP + LightGCN, cosine scores, InfoNCE loss.

    Training batches carry positive (user, item) pairs only (``train_neg_sample_args: ~``):
    the model draws ``n_negatives`` uniform negatives per pair itself. RecBole's sampler would
    repeat every positive row once per negative (256 copies of each batch row); sampling here
    keeps one row per positive and lets the scores come from one matrix product.
    """

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.tau = config["tau"]
        self.n_negatives = config["n_negatives"]
        self.item_representation = config["item_representation"]
        self.intention_alpha = config["intention_alpha"]
        self.normalize_representations = config["normalize_representations"]
        self.positive_sampling = config["positive_sampling"]
        if self.positive_sampling not in ("interaction", "user"):
            raise ValueError(f"positive_sampling must be 'interaction' or 'user', not '{self.positive_sampling}'")
        if self.item_representation not in ("language", "id"):
            raise ValueError(f"item_representation must be 'language' or 'id', not '{self.item_representation}'")

        # Training split only: the graph, user means, negatives and history all come from it.
        interactions = dataset.inter_matrix(form="csr").astype(np.float32)
        interactions.data[:] = 1.0  # repeated (user, item) rows count once
        self.history = interactions
        # CSR rows of the training positives, for drawing a user's positive uniformly
        self.register_buffer("history_indptr", torch.from_numpy(interactions.indptr.astype(np.int64)), persistent=False)
        self.register_buffer("history_items", torch.from_numpy(interactions.indices.astype(np.int64)), persistent=False)
        degrees = np.diff(interactions.indptr)
        # negative_items: trained keeps items without a training interaction (cold items) out
        # of the negatives, which would otherwise teach the projector to push their texts away.
        if config["negative_items"] not in ("all", "trained"):
            raise ValueError(f"negative_items must be 'all' or 'trained', not '{config['negative_items']}'")
        if config["negative_items"] == "trained":
            trained = np.flatnonzero(np.bincount(interactions.indices, minlength=self.n_items) > 0)
            self.register_buffer("negative_pool", torch.from_numpy(trained.astype(np.int64)), persistent=False)
        else:
            self.negative_pool = None
        self.register_buffer(
            "active_users", torch.from_numpy(np.flatnonzero(degrees).astype(np.int64)), persistent=False
        )
        with warnings.catch_warnings():  # "CSR support is in beta": matmul is all we use
            warnings.simplefilter("ignore", UserWarning)
            adjacency = sparse_tensor(normalized_adjacency(interactions)).to_sparse_csr()
        self.register_buffer("norm_adj", adjacency, persistent=False)
        coo = interactions.tocoo()
        keys = torch.from_numpy(coo.row.astype(np.int64) * self.n_items + coo.col)
        if self.n_users * self.n_items <= BITMAP_LIMIT:
            # A dense user x item bitmap answers membership 25x faster than a binary search.
            bitmap = torch.zeros(self.n_users * self.n_items, dtype=torch.bool)
            bitmap[keys] = True
            self.register_buffer("positive_bitmap", bitmap, persistent=False)
        else:
            self.positive_bitmap = None
            self.register_buffer("positive_keys", keys.sort().values, persistent=False)

        self.encoder = None
        if self.item_representation == "language":
            item_z = self._item_language_representations(config, dataset)
            if self.normalize_representations:
                item_z = F.normalize(item_z, dim=-1)
            item_z[0] = 0.0  # padding item
            user_z = sparse_tensor(row_mean_operator(interactions)) @ item_z
            # Derived from the data and the frozen LM (cached on disk): kept out of checkpoints.
            self.register_buffer("item_z", item_z, persistent=False)
            self.register_buffer("user_z", user_z, persistent=False)
            input_size = item_z.shape[1]
        else:
            input_size = config["id_embedding_size"]
            self.item_id_embedding = nn.Embedding(self.n_items, input_size)
            # Unit-norm on average, like the normalised language vectors it stands in for.
            nn.init.normal_(self.item_id_embedding.weight, std=input_size**-0.5)
            self.register_buffer("user_mean", sparse_tensor(row_mean_operator(interactions)), persistent=False)

        # Every buffer is derived from the training split on each rank alike; DDP must not
        # broadcast them (it cannot broadcast the sparse ones at all).
        self._ddp_params_and_buffers_to_ignore = [name for name, _ in self.named_buffers()]

        hidden = config["mlp_hidden_size"]
        self.projector = nn.Sequential(
            nn.Linear(input_size, hidden), nn.LeakyReLU(), nn.Linear(hidden, self.embedding_size)
        )

        # Full-sort evaluation reuses one propagation for all users (as RecBole's LightGCN).
        self.restore_user_e = None
        self.restore_item_e = None
        self.other_parameter_name = ["restore_user_e", "restore_item_e"]

    def _item_language_representations(self, config, dataset):
        z, self.encoder = item_text_vectors(config, dataset, "AlphaRec", ", or use item_representation: id")
        return z  # CPU; model.to(device) moves the buffers

    # ---- forward -------------------------------------------------------------------------
    def input_representations(self):
        """``(z_u, z_i)``: ``[n_users, d]`` and ``[n_items, d]`` before the projector."""
        if self.item_representation == "language":
            return self.user_z, self.item_z
        item_z = self.item_id_embedding.weight
        return torch.sparse.mm(self.user_mean, item_z), item_z

    def propagate(self, embeddings):
        """LightGCN: mean of the layer-0..L outputs over the normalised graph."""
        layers = [embeddings]
        for _ in range(self.n_layers):
            embeddings = SymmetricSparseMM.apply(self.norm_adj, embeddings)
            layers.append(embeddings)
        return torch.stack(layers).mean(0)

    def forward(self):
        user_z, item_z = self.input_representations()
        projected = self.projector(torch.cat([user_z, item_z]))  # [n_users + n_items, embedding_size]
        user_e, item_e = torch.split(self.propagate(projected), [self.n_users, self.n_items])
        return user_e, item_e

    # ---- training ------------------------------------------------------------------------
    def is_positive(self, users, items):
        """Whether each (user, item) pair is a training interaction (same shape as ``items``)."""
        keys = users * self.n_items + items
        if self.positive_bitmap is not None:
            return self.positive_bitmap[keys]
        found = torch.searchsorted(self.positive_keys, keys).clamp(max=len(self.positive_keys) - 1)
        return self.positive_keys[found] == keys

    def _draw_items(self, shape, device):
        if self.negative_pool is None:
            return torch.randint(1, self.n_items, shape, device=device)
        return self.negative_pool[torch.randint(len(self.negative_pool), shape, device=device)]

    def sample_negatives(self, users, rounds=3):
        """``[batch, n_negatives]`` uniform item ids, re-drawn where they hit a training positive.

        Each round re-draws only the hits, so a few rounds leave ~density^(rounds+1) false
        negatives (nil here); the last ones are kept rather than looping without bound.
        """
        negatives = self._draw_items((users.shape[0], self.n_negatives), users.device)
        rows = users.unsqueeze(1).expand_as(negatives)
        hit = self.is_positive(rows, negatives).nonzero(as_tuple=True)
        for _ in range(rounds):
            if hit[0].numel() == 0:
                break
            redrawn = self._draw_items((hit[0].numel(),), users.device)
            negatives[hit] = redrawn
            still = self.is_positive(rows[hit], redrawn)
            hit = (hit[0][still], hit[1][still])
        return negatives

    def sample_user_positives(self, count):
        """``count`` (user, positive) pairs: users uniform over those with training items, each
        with one of their training items drawn uniformly (how the authors' code samples)."""
        users = self.active_users[torch.randint(len(self.active_users), (count,), device=self.active_users.device)]
        start, end = self.history_indptr[users], self.history_indptr[users + 1]
        offsets = (torch.rand(count, device=users.device) * (end - start)).long()
        return users, self.history_items[start + offsets]

    def calculate_loss(self, interaction):
        if self.restore_user_e is not None:
            self.restore_user_e, self.restore_item_e = None, None
        users, items = interaction[self.USER_ID], interaction[self.ITEM_ID]
        if self.positive_sampling == "user":
            # RecBole's loader sets how many pairs a step holds; who they are is drawn here.
            users, items = self.sample_user_positives(len(users))
        user_e, item_e = self.forward()
        u = F.normalize(user_e[users], dim=-1)
        all_items = F.normalize(item_e, dim=-1)
        positive = (u * all_items[items]).sum(-1, keepdim=True)  # [batch, 1]
        negatives = self.sample_negatives(users)
        if self.n_items <= self.n_negatives * self.embedding_size:
            # Scoring every item and picking columns takes less memory than gathering a
            # [batch, n_negatives, dim] block whenever the catalogue is this small.
            negative = (u @ all_items.T).gather(1, negatives)
        else:
            negative = torch.bmm(all_items[negatives], u.unsqueeze(-1)).squeeze(-1)
        logits = torch.cat([positive, negative], dim=1) / self.tau  # [batch, 1 + n_negatives]
        return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()

    # ---- inference -----------------------------------------------------------------------
    def _normalized_embeddings(self):
        if self.restore_user_e is None:
            user_e, item_e = self.forward()
            self.restore_user_e = F.normalize(user_e, dim=-1)
            self.restore_item_e = F.normalize(item_e, dim=-1)
        return self.restore_user_e, self.restore_item_e

    def predict(self, interaction):
        user_e, item_e = self._normalized_embeddings()
        u = user_e[interaction[self.USER_ID]]
        i = item_e[interaction[self.ITEM_ID]]
        return (u * i).sum(-1)

    def full_sort_predict(self, interaction):
        user_e, item_e = self._normalized_embeddings()
        return (user_e[interaction[self.USER_ID]] @ item_e.T).view(-1)

    @torch.no_grad()
    def recommend_with_intention(self, user_ids, intention, k=10, alpha=None):
        r"""Top-``k`` item ids (internal) for each user, steered by a free-text ``intention``.

        ``intention`` is one text for all users or one per user. It is embedded by the item
        encoder and projected by the trained MLP; the user's vector becomes
        :math:`(1-\alpha)\hat e_u + \alpha \hat e_{intent}` (both unit-normalised, so ``alpha``
        weighs directions, not magnitudes) and items are ranked by cosine. Training items are
        excluded. Returns a ``[len(user_ids), k]`` LongTensor.
        """
        if self.encoder is None:
            raise ValueError(
                "recommend_with_intention needs item_representation: language; an "
                "ID-embedding model has no text space to put an intention in"
            )
        alpha = self.intention_alpha if alpha is None else alpha
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        user_ids = torch.as_tensor(user_ids, dtype=torch.long, device=self.device).view(-1)
        texts = [intention] if isinstance(intention, str) else list(intention)
        if len(texts) not in (1, len(user_ids)):
            raise ValueError(f"give one intention or one per user ({len(user_ids)}), not {len(texts)}")

        was_training = self.training
        self.eval()
        user_e, item_e = self._normalized_embeddings()
        z = self.encoder.encode(texts, cache=False).to(self.device)
        if self.normalize_representations:
            z = F.normalize(z, dim=-1)
        intent = F.normalize(self.projector(z), dim=-1)  # [1 or n_users, embedding_size]
        query = (1 - alpha) * user_e[user_ids] + alpha * intent
        scores = query @ item_e.T  # [n_users, n_items]

        seen = self.history[user_ids.cpu().numpy()].tocoo()
        rows, cols = (torch.from_numpy(a).long().to(self.device) for a in (seen.row, seen.col))
        scores[rows, cols] = -torch.inf
        scores[:, 0] = -torch.inf  # padding item
        self.train(was_training)
        return scores.topk(min(k, self.n_items - 1), dim=1).indices
