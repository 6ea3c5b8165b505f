"""Text as lima_lite compares and shows it: one normalisation before matching, one escape before Markdown.

    >>> fold("Ｈｏｗ do I\u200b re\u00adset my раssword?")    # fullwidth, zero-width, soft hyphen, Cyrillic а/р
    'how do i reset my password?'
    >>> markdown_text("<img src=x onerror=alert(1)> [me](http://x) | y")
    '&lt;img src=x onerror=alert(1)&gt; [me]\\\\(http://x) \\\\| y'

`fold` is what `data overlap` and curation's duplicate checks match on: Unicode NFKC (fullwidth letters,
ligatures, superscripts become their plain forms), the invisible characters removed (zero-width space and
joiners, word joiner, soft hyphen, byte-order mark, bidirectional marks), the Cyrillic and Greek letters
that look like Latin ones folded to those (CONFUSABLES), then lower case (casefold). Two prompts that look
the same on screen fold to the same text; the text a user wrote is never changed, only the key it is
matched on.

`markdown_text` is what every report, model card and app page puts around text a user or a file supplied
(rater names, model and data names, prompts): HTML's &, <, > as entities, Markdown's links, images, code
spans and table cell ends escaped, line breaks as spaces, so the text shows as written and never becomes
markup, a link or a script.
"""

import unicodedata

# Invisible characters that split or join words without showing: zero-width space, non-joiner, joiner, word
# joiner, soft hyphen, byte-order mark / zero-width no-break space, left-to-right and right-to-left marks,
# the bidirectional embeddings and isolates, Mongolian vowel separator, combining grapheme joiner.
INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\u00ad\ufeff\u200e\u200f\u202a\u202b\u202c\u202d"
                                   "\u202e\u2066\u2067\u2068\u2069\u180e\u034f"))

# Cyrillic and Greek letters drawn like Latin ones (Unicode's confusables for the Latin alphabet, the
# letters a typist or a spammer would use), folded to the Latin letter.
CONFUSABLES = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "һ": "h", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ɡ": "g",
    "А": "a", "В": "b", "Е": "e", "К": "k", "М": "m", "Н": "h", "О": "o", "Р": "p", "С": "c", "Т": "t", "Х": "x",
    "У": "y", "Ѕ": "s", "І": "i", "Ј": "j",
    "α": "a", "ο": "o", "ρ": "p", "ν": "v", "τ": "t", "ι": "i", "κ": "k", "χ": "x", "υ": "u",
    "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z", "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m", "Ν": "n", "Ο": "o", "Ρ": "p",
    "Τ": "t", "Υ": "y", "Χ": "x",
})


def fold(text: str) -> str:
    """The key two texts are matched on: NFKC, invisible characters removed, confusables folded, casefolded."""
    return unicodedata.normalize("NFKC", text).translate(INVISIBLE).translate(CONFUSABLES).casefold()


def markdown_text(text) -> str:
    """`text` as literal text inside Markdown (and the HTML it becomes): no tags, no links or images, no table
    cell ends, no code spans, one line. Emphasis characters are left as they are: at worst they style."""
    flat = " ".join(str(text).split())
    escaped = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return escaped.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`").replace("](", "]\\(")


def markdown_code(text) -> str:
    """`text` as an inline code span (shown verbatim, tags included, never rendered); text holding a backquote,
    which would end the span, is escaped as markdown_text instead."""
    flat = " ".join(str(text).split())
    return markdown_text(flat) if not flat or "`" in flat else f"`{flat}`"
