"""Write Stack Exchange dump files: the rows of our test fixtures, or a large synthetic site for benchmarks.

    $ python bench/make_posts_xml.py --out /tmp/bench/dump/big.stackexchange.com --mb 1024

Rows follow the official dump's Posts.xml: one `<row .../>` per line, HTML bodies escaped into attributes.
The synthetic text is assembled from a few sentences written for this purpose; about a third of the
questions get a top answer that passes every LIMA rule, the rest fail one rule each.
"""

import argparse
import random
from pathlib import Path
from xml.sax.saxutils import quoteattr

HEADER = '<?xml version="1.0" encoding="utf-8"?>\n<posts>\n'
FOOTER = "</posts>\n"


def row_xml(**fields) -> str:
    """One Posts.xml line: `row_xml(Id=1, PostTypeId=1, Score=5, Title="...", Body="<p>...</p>")`."""
    attributes = " ".join(f"{key}={quoteattr(str(value), {chr(10): '&#xA;', chr(13): '&#xD;'})}"
                          for key, value in fields.items())
    return f"  <row {attributes} />\n"


SENTENCES = [
    "The key observation is that every step of the procedure preserves the invariant stated at the start.",
    "A common mistake is to apply the rule before checking that its assumptions actually hold.",
    "In practice the difference matters only when the input is large or the values are close together.",
    "It helps to write the intermediate results down, because the pattern becomes visible after a few rounds.",
    "The same reasoning applies to the general case, with the constant replaced by an arbitrary parameter.",
    "Measurements taken this way are repeatable, which is what makes the method useful in a laboratory.",
    "Temperature, humidity and time interact, so changing one of them usually means adjusting the others.",
    "The historical reason for the convention is that early instruments could only measure ratios.",
]
CODE = "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n"


def answer_html(rng: random.Random, chars: int, extra: str = "") -> str:
    """An answer of about `chars` characters of prose, with a list, a code block, a link and an image."""
    parts, size = [], 0
    while size < chars - 250:
        sentence = " ".join(rng.sample(SENTENCES, 3))
        parts.append(f"<p>{sentence}</p>")
        size += len(sentence) + 2
    parts.insert(1, '<ul><li>Check the assumptions.</li><li>Apply the rule.</li></ul>')
    parts.insert(2, f"<pre><code>{CODE}</code></pre>")
    parts.append('<p>See <a href="https://en.wikipedia.org/wiki/Invariant">the reference</a>.'
                 '<img src="https://i.sstatic.net/x.png" alt="diagram"></p>')
    return extra + "".join(parts)


def write_synthetic_site(folder: Path, megabytes: float, seed: int = 0) -> Path:
    """A Posts.xml of about `megabytes` MB: questions each followed by 3 answers of varied score and length."""
    rng, folder = random.Random(seed), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path, limit, post = folder / "Posts.xml", int(megabytes * 1e6), 0
    flaws = ["", "", "I think ", "As mentioned in the other answer, ", "short", "long", "lowscore", "title"]
    with path.open("w", encoding="utf-8") as out:
        out.write(HEADER)
        size = len(HEADER)
        while size < limit:
            flaw = rng.choice(flaws)
            post += 1
            question = post
            title = (f"How does step {question} of the procedure keep its invariant?" if flaw != "title"
                     else f"Why does this fail at step {question}?")
            lines = [row_xml(Id=question, PostTypeId=1, Score=rng.randint(0, 200), Title=title,
                             Body=f"<p>{' '.join(rng.sample(SENTENCES, 2))}</p>", AnswerCount=3,
                             CreationDate="2015-03-04T10:11:12.130")]
            for rank in range(3):
                post += 1
                chars = {"short": 600, "long": 6000}.get(flaw, rng.randint(1300, 3800))
                top = rank == 0
                score = (rng.randint(10, 300) if flaw != "lowscore" else 8) if top else rng.randint(0, 7)
                body = answer_html(rng, chars, flaw if top and flaw not in ("short", "long", "lowscore", "title") else "")
                lines.append(row_xml(Id=post, PostTypeId=2, ParentId=question, Score=score, Body=body,
                                     CreationDate="2015-03-05T10:11:12.130"))
            chunk = "".join(lines)
            out.write(chunk)
            size += len(chunk)
        out.write(FOOTER)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="write a synthetic Stack Exchange site (Posts.xml) of a given size")
    parser.add_argument("--out", type=Path, required=True, help="site folder to create, e.g. big.stackexchange.com")
    parser.add_argument("--mb", type=float, default=1024, help="approximate size of Posts.xml in MB")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_synthetic_site(args.out, args.mb, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
