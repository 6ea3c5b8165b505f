"""LIMA's curation rules as small named functions, and the HTML -> Markdown cleaner they rely on.

    >>> html_to_markdown('<p>See <a href="https://x.org">the manual</a>.</p><pre><code>ls -l</code></pre>')
    'See the manual.\\n\\n```\\nls -l\\n```'
    >>> first_person("I think the answer is 4.")
    True

Each rule returns True when the text *breaks* it (so `if first_person(answer): drop("first_person")`);
the callers count every drop under the rule's name in the run's report.
"""

import re

# LIMA §2.1: answers between 1,200 and 4,096 characters; top answer with a score of at least 10.
MIN_ANSWER_CHARS = 1200
MAX_ANSWER_CHARS = 4096
MIN_ANSWER_SCORE = 10

_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.S)
# "I" is matched case-sensitively ("i" is often a loop variable); the rest in any case.
_FIRST_PERSON = re.compile(r"\bI\b|\bI'(?:m|ve|d|ll)\b|(?i:\b(?:me|my|mine|myself)\b)")
_REFERS_TO_OTHERS = re.compile(
    r"(?i)\b(?:as (?:mentioned|noted|said|stated|pointed out|others)|other answers?|another answer|"
    r"(?:the|this|that|previous|accepted|top) answers? (?:above|below)|answers? (?:above|below)|"
    r"accepted answer|the comments?|(?:up|down)-?vot\w*|stack ?exchange|stack ?overflow|super ?user|"
    r"server ?fault|this (?:site|forum|thread|question)|edit:|update:)"
)
# A title that points at its body ("this code", "the following", "below") is not self-contained.
_DEICTIC = re.compile(r"(?i)\b(?:this|these|those|the following|following|below|above|attached|here|my|i)\b")
_URL = re.compile(r"^(?:https?://|www\.)\S+$")
_MANY_BLANK_LINES = re.compile(r"\n{3,}")


def prose(markdown: str) -> str:
    """The text without code blocks or inline code: rules about wording must not fire on `my $x` in Perl."""
    return _CODE.sub(" ", markdown)


def first_person(markdown: str) -> bool:
    """The prose says "I", "me", "my", "mine" or "myself" (LIMA drops answers written in the first person)."""
    return bool(_FIRST_PERSON.search(prose(markdown)))


def refers_to_others(markdown: str) -> bool:
    """The prose refers to other answers, comments, votes or the site itself ("as mentioned", "stack exchange")."""
    return bool(_REFERS_TO_OTHERS.search(prose(markdown)))


def title_self_contained(title: str) -> bool:
    """A question title that can stand alone as a prompt: a question of 4+ words that does not point at its body."""
    title = title.strip()
    return title.endswith("?") and len(title.split()) >= 4 and not _DEICTIC.search(title)


def length_ok(text: str, low: int = MIN_ANSWER_CHARS, high: int = MAX_ANSWER_CHARS) -> bool:
    return low <= len(text) <= high


def _converter():
    from markdownify import MarkdownConverter

    class LimaMarkdown(MarkdownConverter):
        """Links keep their words but lose their address (a bare URL as the text goes entirely); images go."""

        def convert_a(self, el, text, parent_tags):
            return "" if _URL.match(text.strip()) else text

        def convert_img(self, el, text, parent_tags):
            return ""

        def convert_video(self, el, text, parent_tags):
            return ""

    return LimaMarkdown(heading_style="ATX", bullets="-", escape_underscores=False, escape_asterisks=False,
                        strip=["script", "style", "iframe"])


_CONVERTER = None


def html_to_markdown(html: str) -> str:
    """Stack Exchange / wikiHow HTML -> Markdown: code blocks and lists kept; links, images and other tags removed."""
    global _CONVERTER
    if _CONVERTER is None:
        _CONVERTER = _converter()
    text = _CONVERTER.convert(html)
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return _MANY_BLANK_LINES.sub("\n\n", text).strip()


_THIS_ARTICLE = re.compile(r"\bThis (article|wikiHow|guide)\b", re.I)
_WIKI_LINK = re.compile(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]")
_MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_MARKDOWN_LINK = re.compile(r"\[([^\]]*)\]\((?:https?://|/)[^)]*\)")
_BARE_URL = re.compile(r"(?:https?://|www\.)\S+")


def rewrite_this_article(text: str) -> str:
    """wikiHow's "This article shows..." becomes "The following answer shows..." (LIMA §2.1)."""
    return _THIS_ARTICLE.sub("The following answer", text)


def strip_plain_links(text: str) -> str:
    """Remove images, links and bare URLs from plain text or Markdown (wikiHow and Reddit text is not HTML)."""
    text = _MARKDOWN_IMAGE.sub("", text)
    text = _MARKDOWN_LINK.sub(r"\1", text)
    text = _WIKI_LINK.sub(r"\1", text)
    text = _BARE_URL.sub("", text)
    text = "\n".join(re.sub(r"[ \t]{2,}", " ", line).rstrip() for line in text.splitlines())
    return _MANY_BLANK_LINES.sub("\n\n", text).strip()
