"""LaTeX in titles and abstracts for display: MathML for the web page, Unicode for the command line, and
nothing a title writes can reach the page as markup."""

import json
import re
from functools import cache
from html.parser import HTMLParser

import jinja2
import pytest
from markupsafe import Markup

from papersim import markup
from papersim.markup import ATTRIBUTES, TAGS, split_math, to_html, to_text
from tests.conftest import REPO

SAMPLE = REPO / "data" / "raw" / "arxiv" / "ml_kaggle_abstracts_sample.jsonl"


@cache
def sample() -> dict[str, dict]:
    with SAMPLE.open(encoding="utf-8") as f:
        return {row["id"]: row for row in map(json.loads, f)}


def field(paper_id: str, name: str) -> str:
    return sample()[f"kaggle-arxiv-{paper_id}"][name]


class Tags(HTMLParser):
    """Every start tag and attribute the browser would build from a fragment."""

    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[str] = []
        self.feed(fragment)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [name for name, _ in attrs]


def outside_math(fragment: str) -> str:
    return re.sub(r"<math.*?</math>", "", fragment, flags=re.S)


def test_real_titles_and_abstracts_show_math_as_mathml():
    title = to_html(field("21b6489b66ba", "title"))  # "Neural Sequence Model Training via $α$-divergence ..."
    assert title.startswith("Neural Sequence Model Training via <math display=\"inline\">")
    assert "<mi>α</mi>" in title and title.endswith("</math>-divergence Minimization")

    manifold = to_html(field("c5cff3169526", "abstract"))  # "... embedded in $\mathbb{R}^d$."
    assert "<msup><mi>ℝ</mi><mi>d</mi></msup>" in manifold and "\\mathbb" not in manifold

    score = to_html(field("61b1fb2d9be2", "abstract"))  # "10.36$\pm$0.15": math though a digit follows
    assert re.search(r"10\.36<math display=\"inline\"><mrow><m[io]>±</m[io]></mrow></math>0\.15", score)

    savings = to_html(field("0d629248bd1f", "abstract"))  # "$\$7.3$ million": an escaped dollar inside math
    assert "<mi>$</mi><mn>7.3</mn></mrow></math> million" in savings

    regret = to_html(field("76e21ba9a866", "abstract"))  # "$\widetilde O(d^2 H^2 \sqrt{T})$"
    assert "<msqrt>" in regret and "<msup><mi>d</mi><mn>2</mn></msup>" in regret


def test_real_text_macros_become_plain_text():
    assert "trade off accuracy for speed in" in to_html(field("7278194ec671", "abstract"))  # {\it accuracy}
    assert "rely on the “pseudo-LiDAR” generation" in to_html(field("ba42afaf372f", "abstract"))
    link = to_html(field("5f91194da35f", "abstract"))  # \href{url}{url}: the address once
    assert link.endswith("available at https://github.com/VivianSZF/Stereo-Waterdrop-Removal")
    # A tilde after a space or a slash is "about" or a home folder, not LaTeX's no-break space.
    assert "a dataset of ~6 million synthetic" in to_html(field("1c766753a4fd", "abstract"))
    assert "http://www.ifp.illinois.edu/~dingliu2/accv2016." in to_html(field("36a0a2b55413", "abstract"))
    assert to_html(r"\emph{Deep} {\it nets} \textbf{at} 10\% -- on 28~kinds, \"Ubersicht") == \
        "Deep nets at 10% – on 28\u00a0kinds, Übersicht"


def test_every_sample_paper_renders_without_leftover_latex():
    rendered = [(paper_id, to_html(text)) for paper_id, row in sample().items()
                for text in (row["title"], row["abstract"])]
    with_math = {paper_id for paper_id, html in rendered if "<math" in html}
    assert len(with_math) >= 60
    assert [(p, html) for p, html in rendered if re.search(r"\\[a-zA-Z]", outside_math(html))] == []
    # "where $ d $ are ...": a space inside the dollars keeps them text (the rule that keeps money text).
    assert [p for p, html in rendered if "$" in outside_math(html)] == ["kaggle-arxiv-76e21ba9a866"]


@pytest.mark.parametrize("text, maths", [
    ("costs $5 and $10 a month", []),
    ("from $5-$10 per paper", []),
    ("US$2.5bn vs US$3bn", []),
    ("where $ d $ is the dimension", []),
    ("an unbalanced $x in a title", []),
    (r"an escaped \$5 fee", []),
    ("$$ $$ and $$", []),
    ("a $$x and $y$", [("y", False)]),
    ("average improvement of $6$ FID and $5$ mIoU", [("6", False), ("5", False)]),
    (r"$x$ then $$\sum_i x_i$$, \(\beta\) and \[\gamma\]", [("x", False), (r"\sum_i x_i", True),
                                                             (r"\beta", False), (r"\gamma", True)]),
    (r"n$>$2 objects and a \\$k$-NN", [(">", False), ("k", False)]),
])
def test_what_counts_as_math(text, maths):
    segments = split_math(text)
    assert "".join(s.source for s in segments) == text
    assert [(s.math, s.display) for s in segments if s.math is not None] == maths


def test_money_and_lone_dollars_stay_text_on_the_page():
    assert to_html("costs $5 and $10") == "costs $5 and $10"
    assert to_html(r"$\alpha$ costs $5") == "<math display=\"inline\"><mrow><mi>α</mi></mrow></math> costs $5"


@pytest.mark.parametrize("text", [
    "<script>alert(1)</script>",
    '"><script>alert(1)</script><a title="',
    "$<img src=x onerror=alert(1)>$",
    r"$\text{<b>}$ and $\text{<img src=x onerror=alert(1)>}$",
    r"$\text{&lt;script&gt;}$",
    r"$\mathrm{a\"b}$ $\"onmouseover=alert(1)$",
    r"$\style{color:red}{x}$ $\color{red}{y}$ $\href{javascript:alert(1)}{z}$",
    r"$$<script>alert(1)</script>$$ \(<svg onload=alert(1)>\) \[</math><script>\]",
    r"\textbf{<script>alert(1)</script>} {\it <img src=x onerror=alert(1)>}",
    r"\href{javascript:alert(1)}{<b>click</b>} R&D & 'quotes' \"o",
    r"$\begin{pmatrix}<&>\end{pmatrix}$ $\operatorname{<script>}$",
])
def test_nothing_in_a_title_becomes_markup(text):
    html = to_html(text)
    parsed = Tags(html)
    assert set(parsed.tags) <= TAGS and set(parsed.attributes) <= ATTRIBUTES
    assert not {"style", "href", "onerror", "onload", "onmouseover"} & set(parsed.attributes)
    assert "<script" not in html and "<img" not in html and "<svg" not in html and "<b>" not in html


def test_huge_spaces_cannot_push_the_page_apart():
    html = to_html(r"$\hspace{100cm}x\rule{50cm}{90cm}\mkern{400mu}\,y\quad z\Huge w$")
    assert "100cm" not in html and "90cm" not in html and "400mu" not in html
    assert '<mspace width="0.167em">' in html and '<mspace width="1em">' in html and 'mathsize="2.49em"' in html


def test_inline_html_is_shown_as_text():
    assert to_html("<b>bold</b> & \"q\"") == "&lt;b&gt;bold&lt;/b&gt; &amp; &#34;q&#34;"
    assert to_html(r"$\text{<b>}$") == "<math display=\"inline\"><mrow><mtext>&lt;b&gt;</mtext></mrow></math>"


def test_math_that_cannot_be_converted_shows_its_escaped_source(monkeypatch):
    assert to_html(r"ratio $\frac{a}{<b$ here") == r"ratio $\frac{a}{&lt;b$ here"  # unbalanced braces

    def broken(*args, **kwargs):
        raise RuntimeError("converter failure")

    monkeypatch.setattr(markup, "convert_to_element", broken)
    markup.math_to_mathml.cache_clear()
    try:
        assert to_html(r"cost $\mathcal{O}(n<m)$ and \textit{more}") == r"cost $\mathcal{O}(n&lt;m)$ and more"
    finally:
        markup.math_to_mathml.cache_clear()


def test_to_text_gives_unicode_for_the_command_line():
    assert to_text(r"$\alpha$") == "α"
    assert to_text(field("21b6489b66ba", "title")) == "Neural Sequence Model Training via α-divergence Minimization"
    assert to_text(r"in $\mathcal{O}(n)$ time, $\mathbb{R}^d$, $x^2$") == "in 𝒪(n) time, ℝ^d, x^2"
    assert to_text(r"{\it Sch\"on} -- \textit{2}$\times$ faster") == "Schön – 2× faster"
    # Raw text, not LaTeX source: a bare % is a percent sign, not a comment eating the line.
    assert to_text("by 5% on \\emph{all} tasks\nand R&D") == "by 5% on all tasks\nand R&D"
    assert to_text("<script>") == "<script>"  # the terminal shows it; the page escapes it


@pytest.mark.parametrize("text", ["", "\\", "{", "}}{{", "$$$", "\\begin{", "\\(", "$\\left($", "\\\\$x",
                                  "$\\frac{$", "%", "~", "\\href{x}", "$\\sqrt[$"])
def test_odd_input_never_raises(text):
    assert isinstance(to_html(text), Markup)
    assert isinstance(to_text(text), str)


def test_a_failing_converter_falls_back_to_the_input(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("parser failure")

    monkeypatch.setattr(markup._L2T, "latex_to_text", broken)
    markup.latex_to_unicode.cache_clear()
    try:
        assert to_text(r"\textit{x} <b>") == r"\textit{x} <b>"
        assert to_html(r"\textit{x} <b>") == r"\textit{x} &lt;b&gt;"
    finally:
        markup.latex_to_unicode.cache_clear()


def test_register_adds_both_filters_to_an_autoescaping_environment():
    env = jinja2.Environment(autoescape=True)
    markup.register(env)
    page = env.from_string("<title>{{ t | math_text }}</title><h1>{{ t | math_html }}</h1>").render(
        t=r"<i>$\alpha$</i>")
    assert page == ("<title>&lt;i&gt;α&lt;/i&gt;</title>"
                    "<h1>&lt;i&gt;<math display=\"inline\"><mrow><mi>α</mi></mrow></math>&lt;/i&gt;</h1>")
