r"""Titles' and abstracts' LaTeX for display: MathML for the web page, Unicode for the command line.

Display only: the stored text and what BM25 indexes keep the LaTeX source.

What counts as math:
- `$$...$$`, `\[...\]` (display) and `\(...\)` (inline), when closed and not blank;
- `$...$` (inline), close to pandoc's rule (https://pandoc.org/MANUAL.html#extension-tex_math_dollars):
  the opening `$` has a non-space on its right, the closing `$` (the next unescaped one) a non-space on
  its left, no blank line lies between, and when the math starts with a digit no digit follows the
  closing `$`. So "costs $5 and $10" and "$5-$10" stay money, "$ d $" stays text, while `$6$`,
  `$\$7.3$` and `10.36$\pm$0.15` are math; `\$` is always a literal dollar;
- math with unbalanced braces, or that latex2mathml cannot convert, shows its escaped source instead.

Safety: latex2mathml writes `<`, `&` and `\text{...}` contents raw into its string output, and passes
`\style`/`\href` through as attributes, so its string is never used. Its element tree is serialised
again here keeping only MathML element names and presentation attributes from allow-lists, every text
and attribute value HTML-escaped; anything else turns the segment back into its escaped source.
"""

import html
import re
from collections.abc import Callable, Collection
from functools import lru_cache
from typing import NamedTuple
from xml.etree.ElementTree import Element

import jinja2
from latex2mathml.converter import convert_to_element
from markupsafe import Markup, escape
from pylatexenc import latex2text, latexwalker
from pylatexenc.latex2text import LatexNodes2Text, MacroTextSpec, SpecialsTextSpec
from pylatexenc.macrospec import LatexContextDb, MacroSpec

CACHE_SIZE = 8192  # per cache: results pages repeat titles; at most a few KB (an abstract) each, ~20 MB in all

# The MathML Core elements (https://www.w3.org/TR/mathml-core/) latex2mathml may emit.
TAGS = frozenset({
    "math", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "msup", "msub", "msubsup", "mfrac", "msqrt",
    "mroot", "mstyle", "mpadded", "mphantom", "menclose", "merror", "munder", "mover", "munderover", "mtable",
    "mtr", "mtd", "mlabeledtr", "mmultiscripts", "mprescripts", "none", "semantics", "annotation",
})
# Layout only: no style (the page's CSP forbids inline styles), no href, no colours, no event handlers.
ATTRIBUTES = frozenset({
    "display", "displaystyle", "scriptlevel", "mathvariant", "mathsize", "stretchy", "fence", "separator", "form",
    "accent", "accentunder", "largeop", "movablelimits", "symmetric", "lspace", "rspace", "minsize", "maxsize",
    "width", "height", "depth", "voffset", "linethickness", "notation", "columnalign", "rowalign", "columnlines",
    "rowlines", "columnspacing", "rowspacing", "columnspan", "rowspan", "frame", "framespacing", "linebreak",
})
SAFE_VALUE = re.compile(r"[\w.%#+\- ]{0,64}")  # "bold-italic", "center left", "true"
# A length under 10 em or so, or a named space: `\hspace{100cm}` or `\rule{50cm}{90cm}` in a title would
# push the results list off the page, so such a length is dropped (the element then takes no room).
LENGTHS = frozenset({"width", "height", "depth", "lspace", "rspace", "voffset", "minsize", "maxsize", "mathsize"})
SAFE_LENGTH = re.compile(r"[+-]?(\d(\.\d*)?|\.\d+)(em|ex|mu|pt|px|%|width)?|[a-z]{1,30}")

_MATH_OPEN = re.compile(r"\\.|\$\$?", re.S)  # `\.` first: an escaped character (`\$`, `\\`) is skipped whole
_CLOSERS = {"$": re.compile(r"\\.|\$", re.S), "$$": re.compile(r"\\.|\$\$", re.S),
            "\\(": re.compile(r"\\.", re.S), "\\[": re.compile(r"\\.", re.S)}
_CLOSER = {"$": "$", "$$": "$$", "\\(": "\\)", "\\[": "\\]"}
_CHARACTER_REFERENCE = re.compile(r"&#x[0-9a-fA-F]{1,6};")
_TEXT_MARKUP = re.compile(r"[\\{}~`]|--|''")  # text with none of these reads the same after LaTeX conversion
# Raw text, not LaTeX source: `$` is a dollar, `%` a percent sign (never a comment), and `~` after a space
# or a slash is "about" or a URL's home folder ("~6 million", "/~user"), not a no-break space.
_LITERAL = re.compile(r"\\.|[$%]|(?<=[\s/])~", re.S)
_LITERAL_AS = {"$": "\\$", "%": "\\%", "~": "\\textasciitilde{}"}


def _latex_to_unicode_converter() -> tuple[LatexNodes2Text, LatexContextDb]:
    """pylatexenc's converter and parser contexts, with the fixes titles and abstracts need."""
    texts = latex2text.get_default_latex_context_db()
    texts.add_context_category("papersim", prepend=True, macros=[
        # pylatexenc knows these take an argument but has no text for them, so it drops the argument.
        *(MacroTextSpec(name, discard=False) for name in ("texttt", "textsf", "textup", "textmd", "textnormal")),
        MacroTextSpec("url", "%s"),
        MacroTextSpec("href", _href),
    ], specials=[SpecialsTextSpec("&", "&")])  # "R&D": a title has no table columns to align
    parser = latexwalker.get_default_latex_context_db()
    # Unknown to pylatexenc's parser, `\href` got no arguments and its text spec failed on every abstract with one.
    parser.add_context_category("papersim", prepend=True, macros=[MacroSpec("href", "{{")])
    return LatexNodes2Text(latex_context=texts), parser


def _href(node, l2tobj: LatexNodes2Text) -> str:  # pylatexenc passes the converter by this keyword
    url, label = (l2tobj.nodelist_to_text([arg]) if arg is not None else "" for arg in node.nodeargd.argnlist)
    return label if label == url else f"{label} ({url})"


_L2T, _PARSER = _latex_to_unicode_converter()


class Segment(NamedTuple):
    source: str  # as written, math delimiters included
    math: str | None = None  # the math between the delimiters; None for text
    display: bool = False  # $$...$$ or \[...\]


def split_math(text: str) -> list[Segment]:
    """`text` cut into text and math segments; their sources joined give `text` back."""
    segments: list[Segment] = []
    start = pos = 0
    while (m := _MATH_OPEN.search(text, pos)) is not None:
        opener, pos = m.group(), m.end()
        if opener not in _CLOSER:
            continue
        close = _find(text, pos, opener)
        if close is None or not _is_math(text, opener, pos, close):
            if close is not None and opener != "$":
                pos = close + len(_CLOSER[opener])  # "$$ $$": blank display math, text as a whole
            elif opener == "$$":
                pos = m.start() + 1  # "$$" left open: its second "$" may still open inline math
            continue
        end = close + len(_CLOSER[opener])
        if start < m.start():
            segments.append(Segment(text[start:m.start()]))
        segments.append(Segment(text[m.start():end], text[pos:close], opener in ("$$", "\\[")))
        start = pos = end
    if start < len(text):
        segments.append(Segment(text[start:]))
    return segments


def _find(text: str, pos: int, opener: str) -> int | None:
    """Where the first unescaped closer of `opener` at or after `pos` starts."""
    closer = _CLOSER[opener]
    return next((m.start() for m in _CLOSERS[opener].finditer(text, pos) if m.group() == closer), None)


def _is_math(text: str, opener: str, start: int, close: int) -> bool:
    body = text[start:close]
    if opener != "$":
        return body.strip() != ""
    return (body != "" and not body[0].isspace() and not body[-1].isspace() and "\n\n" not in body
            and not (body[0].isdigit() and text[close + 1:close + 2].isdigit()))


def _balanced(source: str) -> bool:
    depth = 0
    for m in re.finditer(r"\\.|[{}]", source, re.S):
        depth += {"{": 1, "}": -1}.get(m.group(), 0)
        if depth < 0:
            return False
    return depth == 0


def _decode(text: str) -> str:
    return _CHARACTER_REFERENCE.sub(lambda m: html.unescape(m.group()), text)


def _serialise(el: Element, out: list[str]) -> None:
    if el.tag not in TAGS:
        raise ValueError(f"MathML element {el.tag!r} is not on the allow-list")
    attrs = "".join(f' {name}="{escape(value)}"' for name, value in el.attrib.items()
                    if name in ATTRIBUTES and (SAFE_LENGTH if name in LENGTHS else SAFE_VALUE).fullmatch(value))
    out.append(f"<{el.tag}{attrs}>")
    # latex2mathml writes characters as "&#x...;" strings in the text: decode those, then escape everything.
    out.append(str(escape(_decode(el.text or ""))))
    for child in el:
        _serialise(child, out)
    out.append(f"</{el.tag}>")
    out.append(str(escape(_decode(el.tail or ""))))


@lru_cache(maxsize=CACHE_SIZE)
def math_to_mathml(source: str, display: bool = False) -> Markup | None:
    """One math segment (without delimiters) as allow-listed MathML; None when it cannot be converted."""
    if not _balanced(source):
        return None
    try:
        out: list[str] = []
        _serialise(convert_to_element(source, display="block" if display else "inline"), out)
    except Exception:  # the converter fails in many ways on odd input; the source is shown instead
        return None
    return Markup("".join(out))


@lru_cache(maxsize=CACHE_SIZE)
def latex_to_unicode(source: str) -> str:
    """LaTeX text (or math without delimiters) as plain Unicode: macros to their text, symbols to characters."""
    if not _TEXT_MARKUP.search(source):
        return source
    protected = _LITERAL.sub(lambda m: _LITERAL_AS.get(m.group(), m.group()), source)
    try:
        return _L2T.latex_to_text(protected, latex_context=_PARSER)
    except Exception:  # pylatexenc parses tolerantly, but a display must never fail on a title
        return source


def to_html(text: str) -> Markup:
    """Safe HTML: math as MathML, LaTeX text macros as text, everything else escaped."""
    try:
        parts = []
        for segment in split_math(text):
            if segment.math is None:
                parts.append(escape(latex_to_unicode(segment.source)))
            else:
                mathml = math_to_mathml(segment.math, segment.display)
                parts.append(escape(segment.source) if mathml is None else mathml)
        return Markup("").join(parts)
    except Exception:  # a display never fails: the raw text, escaped
        return escape(text)


_WORD_OR_REFERENCE = re.compile(r"&#?\w+;|(\w\w+)")  # a character reference is skipped whole, never marked


def mark_words(text: str, stems: Collection[str], stem: Callable[[str], str]) -> Markup:
    """to_html(text) with every word outside math whose stem is in `stems` wrapped in <mark>: the query's
    terms shown where a result holds them (`stem`: the index's stemmer, so "networks" marks for "network")."""
    html = to_html(text)
    if not stems:
        return html
    stems = set(stems)

    def wrap(match: re.Match) -> str:
        word = match.group(1)
        return f"<mark>{word}</mark>" if word and stem(word.lower()) in stems else match.group(0)

    parts = re.split(r"(<math\b.*?</math>)", str(html), flags=re.S)  # math is left as it is
    return Markup("".join(p if p.startswith("<math") else _WORD_OR_REFERENCE.sub(wrap, p) for p in parts))


def to_text(text: str) -> str:
    """Plain Unicode for a terminal: math and LaTeX text macros converted where possible."""
    try:
        return "".join(latex_to_unicode(s.source if s.math is None else s.math) for s in split_math(text))
    except Exception:
        return text


def register(env: jinja2.Environment) -> None:
    """Adds the filters `math_html` (to_html) and `math_text` (to_text) to a Jinja2 environment."""
    env.filters["math_html"] = to_html
    env.filters["math_text"] = to_text
