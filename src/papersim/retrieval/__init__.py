"""Answering queries: BM25, dense search, their fusion, the faiss index, search and serving."""
