"""BM25 (bm25s, Lucene's variant, English stopwords, Snowball stemming) over passages."""

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from papersim.errors import PapersimError
from papersim.retrieval.passage import Hits, Rankings


def _stemmer(language: str):
    """A Snowball stemmer ("" = none): Lucene's English analyzer stems too (Cranfield BM25 nDCG@10 0.352 -> 0.373)."""
    if not language:
        return None
    import Stemmer

    try:
        return Stemmer.Stemmer(language)
    except KeyError:
        raise PapersimError(f"unknown stemmer language {language!r}: e.g. english, or \"\" for none") from None


class _PackedTokens:
    """Every document's token ids in two flat arrays (4 bytes a token): what bm25s' indexer reads.

    bm25s takes an object with `ids` (iterated three times, one document's id list at a time) and
    `vocab` (token -> id). Its own tokenize() returns the ids as Python lists, ~36 bytes a token:
    about 5 GiB for a million abstracts. Here each list exists only while bm25s reads it.
    """

    def __init__(self, texts: Sequence[str], stemmer, chunk: int = 10_000):
        from bm25s.tokenization import Tokenizer

        tokenizer = Tokenizer(stopwords="en", stemmer=stemmer)
        flat, lengths = [], np.zeros(len(texts), dtype=np.int64)
        for start in range(0, len(texts), chunk):  # one chunk's lists at a time
            docs = list(tokenizer.streaming_tokenize(texts[start:start + chunk], allow_empty=False))
            lengths[start:start + len(docs)] = [len(doc) for doc in docs]
            flat.append(np.fromiter((t for doc in docs for t in doc), dtype=np.int32))
        self.flat = np.concatenate(flat) if flat else np.zeros(0, dtype=np.int32)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.vocab = tokenizer.get_vocab_dict()  # token (stemmed when stemming) -> id
        self.ids = self

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __iter__(self) -> Iterator[list[int]]:
        for start, end in zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist()):
            yield self.flat[start:end].tolist()


class BM25:
    """A bm25s index (Lucene's BM25 variant, English stopwords) over `texts`, rows named by `doc_ids`."""

    def __init__(self, doc_ids: Sequence[str], texts: Sequence[str], stemmer: str = "english"):
        import bm25s

        if len(doc_ids) != len(texts) or not texts:
            raise PapersimError("BM25 needs one text per doc id and at least one document")
        self.doc_ids = list(doc_ids)
        self.language = stemmer
        self.stemmer = _stemmer(stemmer)
        self.retriever = bm25s.BM25()
        self.retriever.index(_PackedTokens(texts, self.stemmer), show_progress=False)

    def _tokens(self, texts: Sequence[str]):
        import bm25s

        return bm25s.tokenize(list(texts), stopwords="en", stemmer=self.stemmer, show_progress=False)

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(n_queries, k) row indices and scores, best first; rows beyond the matches score 0."""
        k = min(k, len(self.doc_ids))
        rows, scores = self.retriever.retrieve(self._tokens(queries), k=k, show_progress=False, n_threads=0)
        return rows, scores

    def score_rows(self, queries: Sequence[str]) -> Iterator[np.ndarray | None]:
        """Every document's score per query, (n_docs,); None for a query left without a term (only stopwords)."""
        import bm25s

        tokens = bm25s.tokenize(list(queries), stopwords="en", stemmer=self.stemmer, return_ids=False,
                                show_progress=False)
        for query in tokens:
            yield self.retriever.get_scores(query) if query else None  # bm25s' get_scores raises on no term

    def rankings(self, query_ids: Sequence[str], queries: Sequence[str], k: int) -> Rankings:
        rows, scores = self.search(queries, k)
        # Rows with score 0 share no term with the query: not retrieved, whatever bm25s pads with.
        return {qid: [self.doc_ids[r] for r, s in zip(row, score) if s > 0]
                for qid, row, score in zip(query_ids, rows, scores)}

    def save(self, folder: Path) -> None:
        """bm25s' own save format plus the row -> doc id list."""
        self.retriever.save(str(folder), corpus=None)
        (folder / "doc_ids.txt").write_text("\n".join(self.doc_ids) + "\n", encoding="utf-8")
        (folder / "stemmer.txt").write_text(self.language, encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> "BM25":
        import bm25s

        self = cls.__new__(cls)
        self.retriever = bm25s.BM25.load(str(folder))
        self.doc_ids = (folder / "doc_ids.txt").read_text(encoding="utf-8").splitlines()
        self.language = (folder / "stemmer.txt").read_text(encoding="utf-8")
        self.stemmer = _stemmer(self.language)
        return self


def lexical_hits(bm25: BM25, query_ids: Sequence[str], queries: Sequence[str], depth: int) -> dict[str, Hits]:
    """BM25's top `depth` per query as (doc ids, scores); documents sharing no term are left out."""
    rows, scores = bm25.search(queries, depth)  # (n_queries, depth)
    return {qid: ([bm25.doc_ids[r] for r, s in zip(row, score) if s > 0], [float(s) for s in score if s > 0])
            for qid, row, score in zip(query_ids, rows, scores)}
