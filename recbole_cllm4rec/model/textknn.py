r"""TextKNN
################################################

A text-only nearest-neighbour ranker, the baseline that shows what collaborative training adds
beyond text similarity: a user's profile is the mean of the L2-normalised text vectors of their
training items, and an item's score is the cosine between that profile and the item's text
vector. The vectors come from the same frozen sentence encoder (and disk cache) as AlphaRec's.
Nothing is trained. A user with no training item has no profile and gets the training
popularity ranking instead.
"""

import numpy as np
import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType, ModelType

from recbole_cllm4rec.model.alpharec import row_mean_operator, sparse_tensor
from recbole_cllm4rec.model.text_vectors import item_text_vectors


class TextKNN(GeneralRecommender):
    input_type = InputType.POINTWISE
    type = ModelType.TRADITIONAL  # one pass over the data (RecBole's TraditionalTrainer), as Pop

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        item_z, _ = item_text_vectors(config, dataset, "TextKNN")
        item_z = F.normalize(item_z, dim=-1)  # the padding row stays zero
        interactions = dataset.inter_matrix(form="csr").astype(np.float32)
        interactions.data[:] = 1.0
        user_z = F.normalize(sparse_tensor(row_mean_operator(interactions)) @ item_z, dim=-1)
        counts = torch.from_numpy(np.asarray(interactions.sum(axis=0)).ravel().astype(np.float32))
        self.register_buffer("item_z", item_z, persistent=False)
        self.register_buffer("user_z", user_z, persistent=False)
        # cosines lie in [-1, 1]; popularity is only used for users without a profile
        self.register_buffer("popularity", counts / counts.max().clamp(min=1), persistent=False)
        self.register_buffer("has_profile", torch.from_numpy(np.diff(interactions.indptr) > 0), persistent=False)
        self.fake_loss = torch.nn.Parameter(torch.zeros(1))  # RecBole's trainer wants a parameter

    def forward(self):
        pass

    def calculate_loss(self, interaction):
        return torch.nn.Parameter(torch.zeros(1, device=self.device))

    def full_sort_predict(self, interaction):
        users = interaction[self.USER_ID]
        scores = self.user_z[users] @ self.item_z.T
        scores = torch.where(self.has_profile[users, None], scores, self.popularity)
        return scores.view(-1)

    def predict(self, interaction):
        users, items = interaction[self.USER_ID], interaction[self.ITEM_ID]
        scores = (self.user_z[users] * self.item_z[items]).sum(-1)
        return torch.where(self.has_profile[users], scores, self.popularity[items])
