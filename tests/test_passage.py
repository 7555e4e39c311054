"""The passage every system indexes: a paper's title, then its abstract."""

from papersim.retrieval.passage import passage_text


def test_passage_is_title_then_abstract():
    assert passage_text(" Wing flutter ", "We study it. ") == "Wing flutter. We study it."
    assert passage_text("", "Only an abstract.") == "Only an abstract."
