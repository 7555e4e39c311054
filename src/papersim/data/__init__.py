"""Reading a corpus: sources and their formats, normalisation, validation, the ingest stage."""
