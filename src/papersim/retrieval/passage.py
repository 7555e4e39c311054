"""What a document and a ranked answer are to every retrieval system."""



Rankings = dict[str, list[str]]


Hits = tuple[list, list[float]]  # one query's (doc ids best first, their scores)


def passage_text(title: str, abstract: str) -> str:
    """What a document is to every system: title and abstract (the BEIR convention)."""
    title, abstract = title.strip(), abstract.strip()
    return f"{title}. {abstract}" if title else abstract
