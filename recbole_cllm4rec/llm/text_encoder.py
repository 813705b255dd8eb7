"""Frozen text embeddings from a sentence encoder or a causal LM, cached on disk.

``TextEncoder('all-minilm-l6-v2').encode(texts)`` returns a ``[len(texts), dim]`` float tensor.
The encoder may be an alias of an offline model package ('all-minilm-l6-v2', 'smollm2-135m'),
a local folder, a ``.gguf`` file or a Hugging Face hub id. Pooling follows the model:

* sentence-transformers folders (``modules.json``): the pooling their ``1_Pooling`` config
  names, L2-normalised when a ``Normalize`` module is listed, as ``SentenceTransformer`` does;
* causal LMs: the final hidden state of the last token, the text prefixed with
  ``text_start_ids`` (AlphaRec's recipe for decoder LMs);
* other encoders: the attention-masked mean of the last hidden states.

Embeddings are stored under ``cache_root()/embeddings/<key>.npy``, where the key hashes the
encoder's identity (resolved path and weight files' size and mtime), the pooling, the length
limit and the exact texts, so a second run with the same inputs never loads the model.
"""

import hashlib
import json
import logging
import os
import tempfile

import numpy as np
import torch
from tqdm import tqdm

from recbole_cllm4rec.batching import pad_batch
from recbole_cllm4rec.llm.backbone import (
    BackboneError,
    cache_root,
    load_causal_lm,
    resolve_llm,
    text_start_ids,
)

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-minilm-l6-v2"
POOLINGS = ("auto", "mean", "cls", "max", "last")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def _sentence_transformers_pooling(folder):
    """``(pooling, normalize)`` declared by a sentence-transformers folder, else None."""
    modules_file = os.path.join(folder, "modules.json")
    if not os.path.isfile(modules_file):
        return None
    with open(modules_file, encoding="utf-8") as f:
        modules = json.load(f)
    pooling, normalize = None, False
    for module in modules:
        kind = module.get("type", "").rsplit(".", 1)[-1]
        if kind == "Pooling":
            with open(os.path.join(folder, module["path"], "config.json"), encoding="utf-8") as f:
                flags = json.load(f)
            for mode in ("cls", "max", "mean"):
                if flags.get(f"pooling_mode_{mode}_token") or flags.get(f"pooling_mode_{mode}_tokens"):
                    pooling = mode
                    break
        elif kind == "Normalize":
            normalize = True  # the module has no files of its own, so only modules.json says so
    return (pooling or "mean", normalize)


class TextEncoder:
    """Embed texts with a frozen model; the model is loaded on the first cache miss only."""

    def __init__(
        self,
        name=DEFAULT_ENCODER,
        pooling="auto",
        normalize=None,
        max_length=64,
        batch_size=64,
        cache_dir=None,
        device="cpu",
        show_progress=False,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling '{pooling}' is not one of {POOLINGS}")
        self.name = name
        self.source = resolve_llm(name)  # raises BackboneError for a missing model package
        self.max_length = max_length
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.device = torch.device(device)
        self.show_progress = show_progress
        self.causal = self._is_causal()
        declared = None if self.causal else _sentence_transformers_pooling(self.source.folder)
        if pooling == "auto":
            pooling = "last" if self.causal else (declared[0] if declared else "mean")
        if normalize is None:
            normalize = bool(declared and declared[1])
        if self.causal != (pooling == "last"):
            raise ValueError(
                f"pooling '{pooling}' does not fit '{name}': causal LMs take 'last', encoders 'mean', 'cls' or 'max'"
            )
        self.pooling, self.normalize = pooling, normalize
        self._model = self._tokenizer = None

    # ---- identity ------------------------------------------------------------------------
    def _is_causal(self):
        if self.source.gguf_file:
            return True  # GGUF checkpoints here are decoder LMs
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(self.source.folder)
        except (OSError, ValueError) as err:
            raise BackboneError(
                f"text encoder '{self.name}' could not be found or read: {err}\n"
                f"text_encoder takes 'all-minilm-l6-v2' or 'smollm2-135m' (offline packages), a "
                f"local model folder, a .gguf file, or a hub id already in the local HF cache"
            ) from err
        archs = getattr(config, "architectures", None) or []
        return any(a.endswith(_CAUSAL_SUFFIXES) for a in archs) or bool(getattr(config, "is_decoder", False))

    def identity(self):
        """What decides the vectors: the model's files, the pooling and the length limit."""
        folder = self.source.folder
        files = []
        if os.path.isdir(folder):
            names = [self.source.gguf_file] if self.source.gguf_file else sorted(os.listdir(folder))
            for n in names:
                path = os.path.join(folder, n)
                if n.endswith(_WEIGHT_SUFFIXES) and os.path.isfile(path):
                    stat = os.stat(path)
                    files.append([n, stat.st_size, stat.st_mtime_ns])
        location = os.path.abspath(folder) if os.path.isdir(folder) else folder
        return {
            "encoder": location,
            "files": files,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "max_length": self.max_length,
        }

    def cache_path(self, texts):
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode())
        for text in texts:
            digest.update(text.encode("utf-8"))
            digest.update(b"\0")  # so ['ab'] and ['a', 'b'] differ
        return os.path.join(cache_root(self.cache_dir), "embeddings", f"{digest.hexdigest()[:24]}.npy")

    # ---- encoding ------------------------------------------------------------------------
    def encode(self, texts, cache=True):
        """``[len(texts), dim]`` float32 tensor on the CPU; ``cache=False`` skips the disk cache
        (one-off queries such as a user's intention)."""
        texts = [str(t) for t in texts]
        path = self.cache_path(texts) if cache else None
        if path and os.path.isfile(path):
            vectors, problem = self._load_cached(path, len(texts))
            if problem is None:
                logger.info("text embeddings of %d texts loaded from %s", len(texts), path)
                return torch.from_numpy(vectors)
            logger.warning(
                "text embedding cache %s is corrupt (%s): removed, the embeddings are rebuilt", path, problem
            )
            try:
                os.remove(path)
            except OSError:
                pass
        vectors = self._embed(texts)
        if path:
            self._save(path, vectors)
        return torch.from_numpy(vectors)

    @staticmethod
    def _load_cached(path, n_texts):
        """``(vectors, None)`` for a sound cache file, else ``(None, what is wrong)``: a file cut
        short or overwritten, the wrong shape, or non-finite values (never pickles)."""
        try:
            vectors = np.load(path, allow_pickle=False)
        except Exception as err:  # truncated header, garbage bytes, a pickle: all unreadable here
            return None, f"unreadable: {type(err).__name__}: {err}".replace("\n", " ")[:200]
        if (
            not isinstance(vectors, np.ndarray)
            or vectors.ndim != 2
            or vectors.shape[0] != n_texts
            or vectors.shape[1] == 0
        ):
            return None, f"shape {getattr(vectors, 'shape', None)}, expected ({n_texts}, dim)"
        if vectors.dtype.kind != "f":
            return None, f"dtype {vectors.dtype}, expected float32"
        if not np.isfinite(vectors).all():
            return None, "non-finite values"
        return vectors.astype(np.float32, copy=False), None

    def _save(self, path, vectors):
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=os.path.dirname(path))
            with os.fdopen(fd, "wb") as f:
                np.save(f, vectors)
            os.replace(tmp, path)  # readers see the old file or the whole new one
        except OSError as err:  # a read-only or full cache only costs time
            logger.warning("could not cache text embeddings at %s: %s", path, err)

    def release(self):
        """Drop the loaded model; the next cache miss loads it again."""
        self._model = self._tokenizer = None

    def _load(self):
        if self._model is not None:
            return
        if self.causal:
            model, tokenizer = load_causal_lm(self.name, self.cache_dir)
            model = model.base_model  # the transformer without the LM head: no vocabulary logits
        else:
            from transformers import AutoModel, AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(self.source.folder)
                model = AutoModel.from_pretrained(self.source.folder)
            except (OSError, ValueError) as err:
                raise BackboneError(f"could not load text encoder '{self.name}': {err}") from err
        self._model, self._tokenizer = model.to(self.device).eval(), tokenizer

    def _tokenize(self, batch):
        if not self.causal:
            return self._tokenizer(
                batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
        # Right-padded by hand so the start ids are ours and the last real token is known.
        start = text_start_ids(self._tokenizer)
        rows = [(start + self._tokenizer(t, add_special_tokens=False)["input_ids"])[: self.max_length] for t in batch]
        ids, mask = pad_batch(rows, pad_id=0)
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}

    def _pool(self, hidden, mask):
        # hidden: [batch, seq, dim]; mask: [batch, seq]
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "last":  # causal attention: padding on the right never reaches it
            return hidden[torch.arange(hidden.shape[0]), mask.sum(1) - 1]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "max":
            return hidden.masked_fill(m == 0, float("-inf")).max(1).values
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)

    @torch.no_grad()
    def _embed(self, texts):
        if not texts:
            raise ValueError("no texts to encode")
        self._load()
        # Longest first, so each batch pads to similar lengths; results go back in input order.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = [None] * len(texts)
        starts = range(0, len(texts), self.batch_size)
        for s in tqdm(starts, desc=f"embedding texts ({self.name})", disable=not self.show_progress):
            idx = order[s : s + self.batch_size]
            inputs = {k: v.to(self.device) for k, v in self._tokenize([texts[i] for i in idx]).items()}
            hidden = self._model(**inputs).last_hidden_state.float()
            pooled = self._pool(hidden, inputs["attention_mask"])
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            for i, v in zip(idx, pooled.cpu()):
                out[i] = v
        return torch.stack(out).numpy().astype(np.float32)
