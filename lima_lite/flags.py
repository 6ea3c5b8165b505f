"""Command-line flags that several commands share: a number type with bounds, and LIMA's sampling.

    >>> add_sampling_args(parser)           # --temperature, --top-p, --repetition-penalty, --max-new-tokens
    >>> reply(**sampling_args(args))        # only the flags given; LIMA_SAMPLING fills the rest

One parser per sampling setting (SAMPLING_TYPES) serves the flags of chat, eval and ui and the chat's `/set`,
so a value is refused the same way wherever it is typed.
"""

import argparse

# LIMA's generation settings (§4): nucleus p = 0.9, temperature 0.7, repetition penalty 1.2, <= 2,048 new tokens.
LIMA_SAMPLING = {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.2, "max_new_tokens": 2048}


def bounded(kind, low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse type: `kind` (float or int) within [low, high] (`low_open`: strictly above low), or an error
    saying what is wrong ("must be >= 0, not -1")."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, not {text!r}") from None
        if value != value or (low is not None and (value <= low if low_open else value < low)) or \
                (high is not None and value > high):
            show = str if kind is int else "{:g}".format  # an integer bound in full: 4294967295, not 4.29497e+09
            rule = " and ".join(part for part in (
                None if low is None else f"{'>' if low_open else '>='} {show(low)}",
                None if high is None else f"<= {show(high)}") if part)
            raise argparse.ArgumentTypeError(f"must be {rule}, not {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


# A seed for curation's draws: numpy (MinHash, k-means) takes 0 <= seed < 2**32, so every command that draws
# with one takes the same range; chat and the app seed torch's generator, which takes 64 bits.
DRAW_SEED = bounded(int, 0, 2**32 - 1)
REPLY_SEED = bounded(int, 0, 2**63 - 1)


def workable(parse, least: float, most: float, zero: bool = False):
    """`parse`, then a value that sampling can divide by: between `least` and `most` (or 0 when `zero`).
    Logits divided by 1e-45 (a temperature) or multiplied by 1e300 (a repetition penalty's inverse)
    overflow to inf and sampling draws from NaN; 1e-3 and 1e3 keep every logit of a 16-bit model finite."""
    def check(text: str):
        value = parse(text)
        if (value != 0 or not zero) and not least <= abs(value) <= most:
            raise argparse.ArgumentTypeError(f"must be {'0 or ' if zero else ''}between {least:g} and {most:g} "
                                             f"(further out, sampling overflows), not {text}")
        return value
    check.__name__ = parse.__name__
    return check


# One parser per flag, shared by every command, so chat, eval and ui refuse the same values the same way.
SAMPLING_TYPES = {"temperature": workable(bounded(float, 0), 1e-3, 1e3, zero=True),
                  "top_p": bounded(float, 0, 1, low_open=True),
                  "repetition_penalty": workable(bounded(float, 0, low_open=True), 1e-3, 1e3),
                  "max_new_tokens": bounded(int, 1)}


def add_sampling_args(parser) -> None:
    """--temperature, --top-p, --repetition-penalty, --max-new-tokens (chat, eval, ui); a flag left out is
    None, so LIMA_SAMPLING applies. Values out of range are refused here, before any model is loaded."""
    group = parser.add_argument_group("sampling (LIMA's by default)")
    group.add_argument("--temperature", type=SAMPLING_TYPES["temperature"],
                       help=f"0 = greedy; default {LIMA_SAMPLING['temperature']}")
    group.add_argument("--top-p", type=SAMPLING_TYPES["top_p"],
                       help=f"nucleus sampling, in (0, 1]; default {LIMA_SAMPLING['top_p']}")
    group.add_argument("--repetition-penalty", type=SAMPLING_TYPES["repetition_penalty"], help=f"on the tokens generated "
                       f"so far, > 0 (1 = none); default {LIMA_SAMPLING['repetition_penalty']} (local models: the "
                       "OpenAI API has no such field)")
    group.add_argument("--max-new-tokens", type=SAMPLING_TYPES["max_new_tokens"],
                       help=f"longest reply; default {LIMA_SAMPLING['max_new_tokens']}")


def sampling_args(args) -> dict:
    """The sampling flags given on the command line (see add_sampling_args), as keyword arguments."""
    values = {name: getattr(args, name) for name in LIMA_SAMPLING}
    return {name: value for name, value in values.items() if value is not None}


def length_note(new_tokens: int, max_new_tokens: int) -> str:
    """Why a reply that never ended its turn stopped: at max_new_tokens, or earlier, when the prompt and the reply
    filled the model's context (generation is capped there whatever max_new_tokens says)."""
    if new_tokens < max_new_tokens:
        return f"stopped when the model's context was full, after {new_tokens:,} new tokens (max_new_tokens={max_new_tokens:,})"
    return f"stopped at max_new_tokens={max_new_tokens:,}"
