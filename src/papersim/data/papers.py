"""Reading papers.parquet (the ingest stage's output) for the stages that use it."""

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def read_papers(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """papers.parquet (or a subset of its columns) with every text as one Python string (object dtype).

    pandas' default Arrow-backed strings are copied again by every row filter and every `tolist()`,
    a Python string per access: at a million papers mine_pairs peaked near 8 GiB from such copies.
    Converted one column at a time, so the Arrow copy of one column at most is held beside the strings.
    """
    data = {}
    for name in columns or pq.read_schema(path).names:
        column = pq.read_table(path, columns=[name]).column(0)
        data[name] = pd.Series(column.to_numpy(zero_copy_only=False), dtype=object)  # lists: arrays of str
        del column
        pa.default_memory_pool().release_unused()
    return pd.DataFrame(data)
