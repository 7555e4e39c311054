"""BM25 (bm25s, Lucene's variant, English stopwords, Snowball stemming) over passages."""

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path

import numpy as np

from papersim.errors import PapersimError
from papersim.progress import Progress, track
from papersim.retrieval.passage import Hits, Rankings

QUERY_CHUNK = 256  # queries per bm25s call: a progress line between calls (a whole paper as a query is slow)


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
    """Every document's token ids in two flat arrays (4 bytes a token), with the vocabulary.

    bm25s' own tokenize() returns the ids as Python lists (8 bytes a token, 36 past id 256) for the
    whole corpus at once; here the texts are tokenised (by bm25s' Tokenizer) a chunk at a time.
    """

    def __init__(self, texts: Iterable[str], stemmer, chunk: int = 10_000):
        from bm25s.tokenization import Tokenizer

        tokenizer = Tokenizer(stopwords="en", stemmer=stemmer)
        total = len(texts) if isinstance(texts, Sequence) else None
        texts = iter(texts)
        flat, lengths = [], []
        with Progress("bm25: indexing", total, unit="texts") as progress:
            while batch := list(islice(texts, chunk)):  # one chunk's texts and lists at a time
                docs = list(tokenizer.streaming_tokenize(batch, allow_empty=False))
                lengths.append(np.fromiter((len(doc) for doc in docs), dtype=np.int64, count=len(docs)))
                flat.append(np.fromiter((t for doc in docs for t in doc), dtype=np.int32))
                progress.advance(len(batch))
        self.flat = np.concatenate(flat) if flat else np.zeros(0, dtype=np.int32)
        self.lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)  # tokens per document
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.vocab = tokenizer.get_vocab_dict()  # token (stemmed when stemming) -> id, ids 0..n-1
        self.ids = self  # bm25s' index() takes an object with `ids` and `vocab`

    def __len__(self) -> int:
        return len(self.lengths)


def _bm25_matrix(tokens: _PackedTokens, n_vocab: int, k1: float, b: float, dtype: str,
                 chunk: int = 100_000) -> dict:
    """bm25s' score matrix (Lucene BM25, documents x terms, CSC) built with array operations,
    `chunk` documents at a time, with no Python loop over documents: the same scores as bm25s'
    own build (three entry arrays, then a COO copy) in less memory and time (benchmarks/bm25_build.py)."""
    import scipy.sparse as sp

    n_docs = len(tokens)
    tf, terms, indptr = [], [], [np.zeros(1, dtype=np.int64)]
    for start in range(0, n_docs, chunk):
        end = min(start + chunk, n_docs)
        doc = np.repeat(np.arange(end - start, dtype=np.int64), tokens.lengths[start:end])
        keys, counts = np.unique(doc * n_vocab + tokens.flat[tokens.offsets[start]:tokens.offsets[end]],
                                 return_counts=True)  # sorted by document, then term
        tf.append(counts.astype(dtype))
        terms.append((keys % n_vocab).astype(np.int32))
        indptr.append(indptr[-1][-1] + np.cumsum(np.bincount(keys // n_vocab, minlength=end - start)))
    data, indices, indptr = np.concatenate(tf), np.concatenate(terms), np.concatenate(indptr)
    del tf, terms
    df = np.bincount(indices, minlength=n_vocab)
    idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5)).astype(dtype)  # bm25s' _score_idf_lucene
    norm = k1 * ((1 - b) + b * tokens.lengths / tokens.lengths.mean())  # per document
    for start in range(0, n_docs, chunk):  # score = idf x tf / (tf + norm), in place (bm25s' Lucene tfc)
        end = min(start + chunk, n_docs)
        part = slice(indptr[start], indptr[end])
        per_entry = np.repeat(norm[start:end], np.diff(indptr[start:end + 1]))
        data[part] = idf[indices[part]] * (data[part] / (per_entry + data[part]))
    csc = sp.csr_matrix((data, indices, indptr), shape=(n_docs, n_vocab)).tocsc()
    return {"data": csc.data, "indices": csc.indices, "indptr": csc.indptr, "num_docs": n_docs}


def _chunked_bm25():
    """bm25s.BM25 whose index build (the documented override point) is `_bm25_matrix`."""
    import bm25s

    class ChunkedBM25(bm25s.BM25):
        def build_index_from_ids(self, unique_token_ids, corpus_token_ids, show_progress=True,
                                 leave_progress=False):
            if not isinstance(corpus_token_ids, _PackedTokens) or self.method != "lucene":
                return super().build_index_from_ids(unique_token_ids, corpus_token_ids, show_progress,
                                                    leave_progress)
            self.nonoccurrence_array = None  # Lucene's variant has none
            return _bm25_matrix(corpus_token_ids, len(unique_token_ids), self.k1, self.b, self.dtype)

    return ChunkedBM25()


class BM25:
    """A bm25s index (Lucene's BM25 variant, English stopwords) over `texts`, rows named by `doc_ids`."""

    def __init__(self, doc_ids: Sequence[str], texts: Iterable[str], stemmer: str = "english"):
        """`texts` in `doc_ids` order: a sequence, or an iterator (read once, a chunk at a time)."""
        self.doc_ids = list(doc_ids)
        self.language = stemmer
        self.stemmer = _stemmer(stemmer)
        tokens = _PackedTokens(texts, self.stemmer)
        if len(tokens) != len(self.doc_ids) or not self.doc_ids:
            raise PapersimError("BM25 needs one text per doc id and at least one document")
        self.retriever = _chunked_bm25()
        self.retriever.index(tokens, show_progress=False)

    def _tokens(self, texts: Sequence[str]):
        import bm25s

        return bm25s.tokenize(list(texts), stopwords="en", stemmer=self.stemmer, show_progress=False)

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(n_queries, k) row indices and scores, best first; rows beyond the matches score 0."""
        k = min(k, len(self.doc_ids))
        if len(queries) <= QUERY_CHUNK:
            return self.retriever.retrieve(self._tokens(queries), k=k, show_progress=False, n_threads=0)
        found = [self.retriever.retrieve(self._tokens(queries[start:start + QUERY_CHUNK]), k=k, show_progress=False,
                                         n_threads=0)  # each query ranked on its own: chunks change nothing
                 for start in track(range(0, len(queries), QUERY_CHUNK), "bm25: searching", total=len(queries),
                                    unit="queries", size=lambda start: min(QUERY_CHUNK, len(queries) - start))]
        return np.concatenate([rows for rows, _ in found]), np.concatenate([scores for _, scores in found])

    def score_rows(self, queries: Sequence[str]) -> Iterator[np.ndarray | None]:
        """Every document's score per query, (n_docs,); None for a query left without a term (only stopwords)."""
        import bm25s

        tokens = bm25s.tokenize(list(queries), stopwords="en", stemmer=self.stemmer, return_ids=False,
                                show_progress=False)
        for query in track(tokens, "bm25: scoring", total=len(queries), unit="queries"):
            yield self.retriever.get_scores(query) if query else None  # bm25s' get_scores raises on no term

    def telling_terms(self, texts: Sequence[str], terms: int) -> list[np.ndarray]:
        """Per text, the vocabulary ids of its `terms` (0: all) most telling terms, best first (Lucene's MoreLikeThis):
        tf in the text x the index's idf, among terms at least one other document holds. A paper's whole
        abstract as a BM25 query costs ~30x a short query and ranks by its commonest words; its top
        terms by tf-idf cost about one short query and say what it is about."""
        import bm25s

        tokens = bm25s.tokenize(list(texts), stopwords="en", stemmer=self.stemmer, return_ids=False,
                                show_progress=False)
        vocab = self.retriever.vocab_dict
        df = np.diff(self.retriever.scores["indptr"])  # (n_vocab,) documents holding each term
        n_docs = self.retriever.scores["num_docs"]
        out = []
        for words in tokens:
            ids, tf = np.unique([vocab[w] for w in words if w in vocab], return_counts=True)
            ids = ids.astype(np.int64)
            keep = df[ids] >= 2  # a term only this paper holds finds no other paper
            ids, tf = ids[keep], tf[keep]
            idf = np.log(1 + (n_docs - df[ids] + 0.5) / (df[ids] + 0.5))  # BM25's (Lucene's) idf
            order = np.lexsort((ids, -(tf * idf)))[:terms or None]  # weight descending, ties by term id; 0: all
            out.append(ids[order])
        return out

    def more_like_this(self, texts: Sequence[str], terms: int, depth: int,
                       exclude: Sequence[Iterable[int]] | None = None,
                       within: Sequence[np.ndarray | None] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per text, the top `depth` rows by BM25 with its `terms` telling terms as the query, best first
        (ties by row), only rows sharing a term; `exclude` names rows to leave out per text (the paper
        itself, its duplicates), `within` the only rows a filter keeps (None: every row)."""
        data, indices, indptr = (self.retriever.scores[key] for key in ("data", "indices", "indptr"))
        n_docs = self.retriever.scores["num_docs"]
        out = []
        for i, ids in enumerate(track(self.telling_terms(texts, terms), "bm25: more like this", unit="queries")):
            postings = [np.arange(indptr[t], indptr[t + 1]) for t in ids]
            entries = np.concatenate(postings) if postings else np.zeros(0, dtype=np.int64)
            scores = np.bincount(indices[entries], weights=data[entries], minlength=n_docs)  # (n_docs,)
            if exclude is not None:
                scores[np.fromiter(exclude[i], dtype=np.int64)] = 0
            if within is not None and within[i] is not None:
                kept = np.zeros(n_docs, dtype=bool)
                kept[within[i]] = True
                scores[~kept] = 0
            rows = np.flatnonzero(scores > 0)  # documents sharing a term
            if len(rows) > depth:
                rows = rows[np.argpartition(-scores[rows], depth - 1)[:depth]]
            top = rows[np.lexsort((rows, -scores[rows]))]  # score descending, ties by row
            out.append((top.astype(np.int64), scores[top]))
        return out

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
