"""The one generation core behind the terminal chat, the Gradio app and the evaluator.

    >>> engine = load_engine(adapter="runs/quickstart/adapter")     # base found from the adapter
    >>> for piece in engine.stream([{"role": "user", "content": "How do I boil an egg?"}]):
    ...     print(piece, end="", flush=True)
    >>> engine.last.finish_reason    # "eot" when the model ended its turn, "length" at max_new_tokens

It renders the conversation with the template saved next to the adapter (exactly what training used),
samples with LIMA's settings (nucleus p = 0.9, temperature 0.7, repetition penalty 1.2 on the tokens
generated so far, at most 2,048 new tokens) and stops at EOT or EOS. When the history outgrows the
model's context, the oldest turns are dropped and `last.dropped_turns` says how many.
"""

import re
import sys
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from lima_lite import LimaError
from lima_lite.flags import LIMA_SAMPLING
from lima_lite.precision import precision_report
from lima_lite.template import TEMPLATE_FILE, ChatTemplate, base_format, encode_conversation, encode_prompt, special_ids, token_id

# A line that is only a role word (ChatML's "assistant" after a generated <|im_start|>, "User:"): the model
# is writing a turn header instead of its reply, a sign that it was prompted in a format it does not know.
ROLE_HEADER = re.compile(r"^[ \t]*(assistant|user|system|model)[ \t]*(:|$)", re.IGNORECASE | re.MULTILINE)


@dataclass
class Reply:
    text: str = ""
    finish_reason: str | None = None  # "eot" (ended its turn) or "length" (hit max_new_tokens)
    new_tokens: int = 0
    dropped_turns: int = 0
    token_ids: list[int] = field(default_factory=list)
    special_tokens: list[str] = field(default_factory=list)  # special tokens generated before the stop (template leaks)


@dataclass
class Engine:
    model: torch.nn.Module
    tokenizer: object
    template: ChatTemplate
    name: str
    context_length: int
    last: Reply = field(default_factory=Reply)
    lock: threading.Lock = field(default_factory=threading.Lock)  # one generation at a time per model
    folders: tuple = ()  # the local folders it was loaded from (adapter, base): never written to by a chat's /save

    @property
    def stop_ids(self) -> list[int]:
        ids = {token_id(self.tokenizer, self.template.eot_token)}
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return sorted(ids)

    def prompt_ids(self, messages: list[dict], max_new_tokens: int) -> tuple[list[int], int]:
        """Ids of the history, dropping the oldest exchanges until it fits with room for the reply.

        The room kept for the reply is max_new_tokens, but at most half the context: LIMA's 2,048 new
        tokens on a 2,048-token LLaMA would otherwise leave no room for any question. The work is at most
        n log n in the history (re-encoding the whole history after each drop took 11.6 s on a 0.8 MB one).
        """
        budget = self.context_length - min(max_new_tokens, self.context_length // 2)
        system = messages[:1] if messages and messages[0]["role"] == "system" else []
        turns = messages[len(system):]
        if not turns or turns[-1]["role"] != "user":
            raise LimaError("the conversation must end with the user's message")
        dropped = (self.lima_drop(system, turns, budget) if self.template.chat_format == "lima"
                   else self.native_drop(system, turns, budget))
        ids = encode_prompt(self.tokenizer, self.template, system + turns[dropped:])
        if len(ids) > budget:
            raise LimaError(f"the message is {len(ids):,} tokens; the model's context of {self.context_length:,} "
                            f"leaves room for {budget:,} with space for a reply: shorten it")
        return ids, dropped

    def lima_drop(self, system: list[dict], turns: list[dict], budget: int) -> int:
        """How many of the oldest turns to drop (LIMA's format): each turn is tokenized once and exchanges
        are dropped from the front by their counts, since a conversation's ids are its opening (BOS) and
        then each turn's ids."""
        opening = len(encode_conversation(self.tokenizer, self.template, [])["input_ids"])
        counts = [len(encode_conversation(self.tokenizer, self.template, [m])["input_ids"]) - opening
                  for m in system + turns]
        total, dropped = sum(counts) + opening, 0
        while total > budget and len(turns) - dropped > 1:
            # one user turn and the assistant's answer to it
            total -= counts[len(system) + dropped] + counts[len(system) + dropped + 1]
            dropped += 2
        return dropped

    def native_drop(self, system: list[dict], turns: list[dict], budget: int) -> int:
        """How many of the oldest turns to drop (the base's own template): a native template cannot render
        a turn alone (Gemma's refuses a conversation that starts with the assistant, transformers an
        empty one), so this bisects on the number of exchanges dropped, encoding the whole rest each
        time: log2(n) encodings, since fewer turns never make more ids."""
        def fits(exchanges: int) -> bool:
            return len(encode_prompt(self.tokenizer, self.template, system + turns[2 * exchanges:])) <= budget

        low, high = 0, (len(turns) - 1) // 2  # high: only the last user message left
        while low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if fits(middle) else (middle + 1, high)
        return 2 * low

    def stream(self, messages: list[dict], use_adapter: bool = True, seed: int | None = None, **sampling):
        """Yield the reply's text as it is generated; `self.last` holds the finished Reply.

        `seed` makes the sample repeatable without touching anybody else's random state: the draw runs
        on a forked RNG seeded for this call, and the global RNG is as it was afterwards. Closing the
        generator before the end (`.close()`, or dropping it) stops the generation at the next token.
        """
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        settings = {**LIMA_SAMPLING, **{k: v for k, v in sampling.items() if v is not None}}
        ids, dropped = self.prompt_ids(messages, settings["max_new_tokens"])
        input_ids = torch.tensor([ids], device=self.model.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        abandoned = threading.Event()

        class Abandoned(StoppingCriteria):
            """Set when the caller stops reading (Ctrl-C in the chat): generation ends at the next token
            instead of running on to max_new_tokens in the background, holding the model's lock."""

            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), abandoned.is_set(), dtype=torch.bool, device=input_ids.device)

        kwargs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer,
                      stopping_criteria=StoppingCriteriaList([Abandoned()]), **self.generation_settings(settings, len(ids)))
        result = {}

        def run():
            try:
                with self.lock, torch.inference_mode(), self.adapter_context(use_adapter), seeded(seed):
                    result["output"] = self.model.generate(**kwargs)
            except BaseException as error:  # surface it in the caller's thread
                result["error"] = error
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        text = ""
        try:
            for piece in streamer:
                text += piece
                yield piece
        finally:
            # A caller that stops reading (the app's Stop, a closed browser tab) closes this generator:
            # generation stops at the next token instead of running on to max_new_tokens under the lock.
            abandoned.set()
            thread.join()
        if "error" in result:
            raise result["error"]
        self.last = replace(self.finished(result["output"][0, len(ids):].tolist(), dropped), text=text)

    def reply(self, messages: list[dict], use_adapter: bool = True, seed: int | None = None, **sampling) -> Reply:
        for _ in self.stream(messages, use_adapter=use_adapter, seed=seed, **sampling):
            pass
        return self.last

    def replies(self, conversations: list[list[dict]], use_adapter: bool = True, seed: int | None = None,
                **sampling) -> list[Reply]:
        """One reply to each conversation, generated together in one left-padded batch.

        On a CPU a small model's decoding step costs about the same for one row as for a dozen (the time goes
        to per-layer overhead, not arithmetic), so the quick start's 12 prompts take about as long as one.
        Each row stops at its own turn end and then leaves the batch (decode_batch). With `seed` the batch is
        repeatable; a row's sample depends on the batch it is in, so it differs from `reply(messages, seed=seed)`.
        """
        settings = {**LIMA_SAMPLING, **{k: v for k, v in sampling.items() if v is not None}}
        prompts = [self.prompt_ids(messages, settings["max_new_tokens"]) for messages in conversations]
        width = max(len(ids) for ids, _ in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids, _ in prompts], device=self.model.device)
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids, _ in prompts],
                                      device=self.model.device)
        with self.lock, torch.inference_mode(), self.adapter_context(use_adapter), seeded(seed):
            new = self.decode_batch(input_ids, attention_mask, self.generation_settings(settings, width))
        return [self.finished(ids, dropped) for ids, (_, dropped) in zip(new, prompts, strict=True)]

    def decode_batch(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, settings: dict) -> list[list[int]]:
        """The new ids of each row of a left-padded batch, decoded as generate() decodes it (the same logits
        processors, then temperature and nucleus sampling, or greedy), except that a row leaves the batch and
        its KV cache at its stop. generate() keeps finished rows in every step until the last row ends, so one
        reply that runs on to the limit made the whole batch compute to the limit.
        """
        from transformers import DynamicCache, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        processors = LogitsProcessorList(settings["logits_processor"])
        if settings["do_sample"]:
            processors += [TemperatureLogitsWarper(settings["temperature"]), TopPLogitsWarper(settings["top_p"])]
        stops = torch.tensor(settings["eos_token_id"], device=input_ids.device)
        rows = list(range(input_ids.shape[0]))  # the batch row of each live row
        new = [[] for _ in rows]
        cache = DynamicCache(config=self.model.config)
        ids, mask = input_ids, attention_mask
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # generate()'s: left padding does not count
        step = input_ids
        for _ in range(settings["max_new_tokens"]):
            logits = self.model(input_ids=step, attention_mask=mask, position_ids=positions, cache=cache,
                                use_cache=True, logits_to_keep=1).logits[:, -1, :].float()
            scores = processors(ids, logits)
            tokens = torch.multinomial(scores.softmax(-1), 1)[:, 0] if settings["do_sample"] else scores.argmax(-1)
            for row, token in zip(rows, tokens.tolist(), strict=True):
                new[row].append(token)
            live = ~torch.isin(tokens, stops)
            if not live.any():
                break
            ids, step = torch.cat([ids, tokens[:, None]], 1), tokens[:, None]
            mask, positions = torch.cat([mask, mask.new_ones(len(tokens), 1)], 1), positions[:, -1:] + 1
            if not live.all():
                keep = live.nonzero()[:, 0]
                cache.batch_select_indices(keep)
                rows = [rows[k] for k in keep.tolist()]
                ids, step, mask, positions = ids[keep], step[keep], mask[keep], positions[keep]
        return new

    def generation_settings(self, settings: dict, prompt_length: int) -> dict:
        """generate()'s sampling, length and stop arguments for prompts `prompt_length` tokens long."""
        from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

        sample = settings["temperature"] > 0
        # LIMA penalises repetition of *generated* tokens only, so the prompt is ignored by the penalty.
        processors = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(settings["repetition_penalty"],
                                                                           prompt_ignore_length=prompt_length)])
        return dict(max_new_tokens=min(settings["max_new_tokens"], self.context_length - prompt_length),
                    do_sample=sample, logits_processor=processors,
                    temperature=settings["temperature"] if sample else None,
                    top_p=settings["top_p"] if sample else None, top_k=None,
                    eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id)

    def finished(self, new: list[int], dropped: int) -> Reply:
        """The Reply of generated ids `new`, cut after the first stop (a batch pads finished rows after it)."""
        stops = set(self.stop_ids)
        end = next((k + 1 for k, token in enumerate(new) if token in stops), len(new))
        new = new[:end]
        ended = bool(new) and new[-1] in stops
        specials = special_ids(self.tokenizer)
        leaked = [self.tokenizer.convert_ids_to_tokens(i) for i in new[: len(new) - ended] if i in specials]
        return Reply(text=self.tokenizer.decode(new, skip_special_tokens=True), finish_reason="eot" if ended else "length",
                     new_tokens=len(new), dropped_turns=dropped, token_ids=new, special_tokens=leaked)

    def adapter_context(self, enabled: bool):
        """The base model's behaviour, for comparisons, without loading it twice."""
        if enabled or not hasattr(self.model, "disable_adapter"):
            return nullcontext()
        return self.model.disable_adapter()


@contextmanager
def seeded(seed: int | None):
    """Torch draws from `seed` inside the block (CPU and CUDA) and the global RNG is restored after; None: no change."""
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def default_precision() -> tuple[bool, str]:
    """(4-bit?, dtype) of replies on this machine (lima_lite.resolve.reply_precision)."""
    from lima_lite.machine import detect_machine
    from lima_lite.resolve import reply_precision

    return reply_precision(detect_machine())


def load_engine(adapter: str | Path | None = None, base: str | None = None, load_in_4bit: bool | None = None,
                dtype: str | None = None, trust_remote_code: bool = False) -> Engine:
    """Load base (+ adapter) once. `adapter` is a folder or Hub id; `base` defaults to the adapter's base."""
    from lima_lite.layout import adapter_base, adapter_for_base, check_lima_adapter, readable_weights
    from lima_lite.memory.host import map_large_blocks
    from lima_lite.model import check_vocabulary, get_model, get_tokenizer, load_tokenizer, resolve_base, resolve_model

    map_large_blocks()  # on a CPU, a growing KV cache frees a block of every size: keep them off the heap
    auto_4bit, auto_dtype = default_precision()
    load_in_4bit = auto_4bit if load_in_4bit is None else load_in_4bit
    dtype = dtype or auto_dtype
    if adapter is not None:
        from peft import PeftModel

        adapter_dir = check_lima_adapter(resolve_model(str(adapter)))
        base = base or adapter_base(adapter_dir)
        tokenizer = load_tokenizer(adapter_dir)
        template = ChatTemplate.load(adapter_dir)
        base_dir = resolve_base(base, "--base")
        check_vocabulary(adapter_dir, tokenizer, base_dir, base)
        with readable_weights(base_dir):
            model = get_model(base_dir, load_in_4bit, dtype, vocab_size=len(tokenizer),
                              trust_remote_code=trust_remote_code)
        with readable_weights(adapter_dir), adapter_for_base(adapter_dir, base):
            model = PeftModel.from_pretrained(model, adapter_dir)
        name, folders = str(adapter), (adapter_dir, base_dir)
    else:
        if base is None:
            raise LimaError("give an adapter (--adapter) or a base model (--base)")
        path = resolve_base(base, "--base")
        if (Path(path) / TEMPLATE_FILE).is_file():  # a merged lima_lite model: render as it was trained
            tokenizer, template = load_tokenizer(path), ChatTemplate.load(path)
        else:
            eot_token, chat_format = base_format(load_tokenizer(path))
            tokenizer, template, _ = get_tokenizer(path, eot_token, trust_remote_code, chat_format)
        with readable_weights(path):
            model = get_model(path, load_in_4bit, dtype, vocab_size=len(tokenizer), trust_remote_code=trust_remote_code)
        name, folders = base, (path,)
    model.eval()
    # said once the model is loaded, so a name that does not resolve still fails in exactly one line
    print(precision_report(dtype, False, False, f"replies{' (4-bit base)' if load_in_4bit else ''}"), file=sys.stderr)
    context = getattr(model.config.get_text_config(), "max_position_embeddings", None) or 2048
    return Engine(model=model, tokenizer=tokenizer, template=template, name=name, context_length=context,
                  folders=tuple(Path(folder) for folder in folders))


def leaks_template(reply: Reply) -> bool:
    """The reply contains template words: a special token other than the final stop, or a role-header line."""
    return bool(reply.special_tokens) or bool(ROLE_HEADER.search(reply.text))


def stop_rates(replies: list[Reply]) -> dict:
    """How many replies ended at the turn end before the length limit, and how many leak template words."""
    ended = sum(r.finish_reason == "eot" for r in replies)
    leaked = sum(leaks_template(r) for r in replies)
    return {"replies": len(replies), "ended": ended, "leaked": leaked,
            "ended_rate": ended / len(replies) if replies else 0.0,
            "leak_rate": leaked / len(replies) if replies else 0.0}


def stop_summary(label: str, replies: list[Reply], max_new_tokens: int) -> str:
    """One line: how many replies ended at the turn end before the limit, how many leaked template words."""
    rates = stop_rates(replies)
    return (f"{label}: {rates['ended']}/{rates['replies']} replies ended at the turn end before {max_new_tokens} "
            f"tokens ({rates['ended_rate']:.0%}); {rates['leaked']} wrote template words or role headers "
            f"({rates['leak_rate']:.0%})")
