"""Talk to a LIMA adapter (or a base model) in the terminal: multi-turn, streamed.

    $ python -m lima_lite.chat --adapter runs/quickstart/adapter
    $ python -m lima_lite.chat --adapter runs/quickstart/adapter --prompt "Plan a picnic" --prompt "Make it cheaper"
    $ lima-lite chat --adapter someone/llama-7b-lima --compare     # base model's reply under each answer
    $ lima-lite chat --adapter runs/quickstart/epoch-02 --no-load-in-4bit --dtype float32

--adapter and --base take a local folder or a Hub id (downloaded once, then cached). The base loads in
4-bit NF4 on CUDA and in full precision on a CPU unless --load-in-4bit / --no-load-in-4bit says otherwise.

In the chat, type /help for the commands (/reset, /undo, /retry, /save FILE, /set key=value, /exit).
"""

import argparse
import io
import sys
from pathlib import Path

from lima_lite import LimaError
from lima_lite.conversations import LONE_SURROGATE
from lima_lite.files import check_parent, inside, write_jsonl
from lima_lite.flags import LIMA_SAMPLING, REPLY_SEED, SAMPLING_TYPES, add_sampling_args, length_note

HELP = """commands:
  /reset            start a new conversation
  /undo             forget the last exchange (your message and the reply)
  /retry            answer your last message again
  /save FILE        write the conversation as JSONL (messages form)
  /set key=value    change sampling: temperature, top_p, max_new_tokens, repetition_penalty
  /help             this text
  /exit             quit (or Ctrl-D)
Ctrl-C stops a reply and keeps what was written of it (/retry for another one); at the prompt it quits."""



class Session:
    """The conversation and its sampling settings; commands edit them, `respond` extends them."""

    def __init__(self, engine, out=None, compare: bool = False, seed: int | None = None, models=(), **settings):
        self.engine, self.out, self.compare, self.seed = engine, out or sys.stdout, compare, seed
        self.models = tuple(models)  # the folders the model was loaded from: /save never writes into them
        self.replies = 0  # with --seed, reply n is drawn from seed + n: a scripted chat repeats exactly
        self.messages: list[dict] = []
        self.settings = {**LIMA_SAMPLING, **{k: v for k, v in settings.items() if v is not None}}

    def say(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    def streamed(self, **kwargs) -> str | None:
        """Print the reply to the history as it comes; its text, or None when Ctrl-C stopped it (the text
        written so far is then in self.partial)."""
        self.partial = ""
        try:
            for piece in self.engine.stream(self.messages, **kwargs, **self.settings):
                self.partial += piece
                self.say(piece, end="")
        except KeyboardInterrupt:  # the engine has stopped generating by the time this is caught
            return None
        return self.partial

    def respond(self) -> str | None:
        """Stream the model's reply to the history (which ends with the user) and append it. Ctrl-C stops
        it: what was written of it is kept (a history always ends with a reply), or the message is dropped
        when nothing was."""
        label = "[adapter] " if self.compare else ""
        self.say(label, end="")
        seed = None if self.seed is None else self.seed + self.replies
        self.replies += 1
        if self.streamed(seed=seed) is None:
            if self.partial.strip():
                self.messages.append({"role": "assistant", "content": self.partial.strip()})
                self.say("\n(stopped; the reply so far is kept: /retry for another, /undo to forget the exchange)")
            else:
                self.messages.pop()
                self.say("\n(stopped before the reply began; your message was not kept)")
            return None
        reply = self.engine.last
        self.say()
        if reply.dropped_turns:
            self.say(f"(the history outgrew the context: the oldest {reply.dropped_turns} turns were left out)")
        if reply.finish_reason == "length":
            self.say(f"({length_note(reply.new_tokens, self.settings['max_new_tokens'])})")
        if self.compare:
            self.say("[base]    ", end="")
            self.say() if self.streamed(use_adapter=False, seed=seed) is not None else self.say("\n(stopped)")
        self.messages.append({"role": "assistant", "content": reply.text.strip()})
        return reply.text

    def command(self, line: str) -> bool:
        """Run a /command; False means exit."""
        name, _, arg = line[1:].strip().partition(" ")
        if name in ("exit", "quit"):
            return False
        if name == "help":
            self.say(HELP)
        elif name == "reset":
            self.messages.clear()
            self.say("(new conversation)")
        elif name == "undo":
            if len(self.messages) < 2:
                self.say("(nothing to undo)")
            else:
                del self.messages[-2:]
                self.say(f"(removed the last exchange; {len(self.messages) // 2} left)")
        elif name == "retry":
            if not self.messages:
                self.say("(nothing to retry)")
            else:
                if self.messages[-1]["role"] == "assistant":
                    self.messages.pop()
                self.respond()
        elif name == "save":
            if not arg:
                self.say("usage: /save FILE")
            else:
                self.save(Path(arg.strip()))
        elif name == "set":
            self.set(arg)
        else:
            self.say(f"unknown command /{name}; /help lists them")
        return True

    def save(self, path: Path) -> None:
        """/save FILE: the conversation as JSONL. An existing file is replaced only when the user says yes;
        a folder, or a disk that refuses the write, is said in one line and the chat goes on."""
        if path.is_dir():
            self.say(f"(not saved: {path} is a folder; give a file name)")
            return
        model = next((folder for folder in self.models if inside(path, folder)), None)
        if model is not None:  # even with a yes: the adapter or base this chat runs on would be damaged
            self.say(f"(not saved: {path} is inside {model}, which this chat's model was loaded from; choose another file)")
            return
        if path.exists() and self.ask(f"{path} exists: replace it? [y/N] ").strip().lower() not in ("y", "yes"):
            self.say("(not saved)")
            return
        try:
            check_parent(path)
            write_jsonl([{"messages": self.messages, "source": self.engine.name}], path)
        except (LimaError, OSError) as error:
            self.say(f"(not saved: {f'{path}: {error.strerror or error}' if isinstance(error, OSError) else error})")
            return
        except ValueError as error:  # a NUL in the name: no file can be called that
            self.say(f"(not saved: {str(path)!r}: {error})")
            return
        self.say(f"(saved {len(self.messages)} turns to {path})")

    def ask(self, question: str) -> str:
        """A yes/no question at the prompt; no answer (end of input) is no."""
        try:
            return input(question)
        except (EOFError, KeyboardInterrupt):
            return ""

    def set(self, arg: str) -> None:
        """/set key=value ...: read by the command-line flags' own parsers, so both refuse the same values."""
        updates = {}
        for pair in arg.split():
            key, sep, value = pair.partition("=")
            if key not in SAMPLING_TYPES or not sep:
                self.say(f"cannot set {pair!r}: use key=value with key one of {', '.join(SAMPLING_TYPES)}")
                return
            try:
                updates[key] = SAMPLING_TYPES[key](value)
            except argparse.ArgumentTypeError as error:
                self.say(f"cannot set {key}: {error}")
                return
        self.settings.update(updates)
        self.say("(" + ", ".join(f"{k}={v}" for k, v in self.settings.items()) + ")")

    def handle(self, line: str) -> bool:
        """One line typed by the user: a command or a message. False means exit.

        A message that cannot be answered (longer than the context) is reported and forgotten;
        the session goes on.
        """
        undecodable = LONE_SURROGATE.search(line)
        if undecodable:  # stdin and argv are read with surrogateescape: a byte that is not UTF-8 is U+DC80..U+DCFF
            byte = ord(undecodable.group()) - 0xDC00
            self.say(f"(not sent: the line is not UTF-8 text (byte {f'0x{byte:02x}' if byte < 256 else '?'} at character "
                     f"{undecodable.start()}); nothing of it was kept)")
            return True
        if line.startswith("/"):
            return self.command(line)
        if line.strip():
            self.messages.append({"role": "user", "content": line})
            try:
                self.respond()
            except LimaError as error:
                self.messages.pop()
                self.say(f"\n(not sent: {error})")
        return True


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lima_lite.chat", description=__doc__.split("\n\n")[0],
                                epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", help="adapter folder (a run's adapter/ or epoch-NN/) or Hub id")
    p.add_argument("--base", help="base model folder or Hub id (default: the adapter's base)")
    p.add_argument("--prompt", action="append", help="a user turn; repeat for a scripted conversation, then exit")
    p.add_argument("--compare", action="store_true", help="also show the base model's reply to the same history")
    p.add_argument("--load-in-4bit", dest="load_in_4bit", action=argparse.BooleanOptionalAction, default=None,
                   help="4-bit NF4 base (default: on with CUDA, off on a CPU)")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                   help="compute dtype (default: bfloat16 with CUDA, float32 on a CPU)")
    add_sampling_args(p)
    p.add_argument("--seed", type=REPLY_SEED,
                   help="seed the sampler, for a repeatable conversation")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if not args.adapter and not args.base:
        raise LimaError("give --adapter DIR (or --base MODEL to talk to a base model)")
    from lima_lite.generate import load_engine

    engine = load_engine(adapter=args.adapter, base=args.base, load_in_4bit=args.load_in_4bit, dtype=args.dtype)
    session = Session(engine, compare=args.compare and args.adapter is not None, seed=args.seed, models=engine.folders,
                      temperature=args.temperature, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                      max_new_tokens=args.max_new_tokens)
    if args.prompt:
        for prompt in args.prompt:
            session.say(f">>> {prompt}")
            session.handle(prompt)
        return 0
    session.say(f"Chatting with {engine.name}. /help for commands, /exit or Ctrl-D to quit.")
    if isinstance(sys.stdin, io.TextIOWrapper):  # a byte that is not UTF-8 (piped binary) is said, not a traceback
        sys.stdin.reconfigure(errors="surrogateescape")
    while True:
        try:
            line = input(">>> ")
        except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C at the prompt: quit
            session.say()
            return 0
        if not session.handle(line):
            return 0


if __name__ == "__main__":
    from lima_lite.entry import run

    sys.exit(run("lima_lite.chat:main", sys.argv[1:]))
