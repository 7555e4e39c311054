"""params.yaml sections -> frozen config dataclasses; an unknown or missing key is an error."""

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from papersim.errors import PapersimError

T = TypeVar("T")

# Stage name -> its params section's config dataclass ("module:Class"); one line per stage.
STAGE_CONFIGS = {
    "ingest": "papersim.data.ingest:IngestConfig",
    "mine_pairs": "papersim.training.pairs:MinePairsConfig",
    "train": "papersim.training.train:TrainConfig",
    "evaluate": "papersim.evaluation.evaluate:EvaluateConfig",
    "build_index": "papersim.retrieval.index:BuildIndexConfig",
    "retrain": "papersim.lifecycle.retrain:RetrainConfig",  # the retraining flow (flows/retrain.py), not a DVC stage
}


def _read_yaml(path: Path, missing: str) -> Any:
    """A YAML file's document ({} when empty); a missing or malformed file is a user error."""
    if not path.is_file():
        raise PapersimError(f"{path}: {missing}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise PapersimError(f"{path}: not valid YAML: {exc}") from None


def read_params(path: str | Path) -> dict[str, Any]:
    """Read the whole params file; a missing or malformed file is a user error."""
    path = Path(path)
    params = _read_yaml(path, "params file not found")
    if not isinstance(params, dict):
        raise PapersimError(f"{path}: expected a mapping of stage sections at the top level")
    return params


def build_config(cls: type[T], values: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping, naming `where` (e.g. 'params.yaml: ingest') on errors."""
    if not isinstance(values, dict):
        raise PapersimError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise PapersimError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed keys: {', '.join(fields)}"
        )
    required = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    missing = [name for name in required if name not in values]
    if missing:
        raise PapersimError(f"{where}: missing required key(s) {', '.join(map(repr, missing))}")
    try:
        return cls(**values)
    except (TypeError, ValueError, PapersimError) as exc:  # PapersimError: from a nested section
        raise PapersimError(f"{where}: {exc}") from None


def load_section(params_path: str | Path, section: str, cls: type[T]) -> T:
    """Load one stage's section of params.yaml into its config dataclass."""
    params = read_params(params_path)
    if section not in params:
        raise PapersimError(f"{params_path}: no '{section}' section")
    return build_config(cls, params[section], f"{params_path}: {section}")


def parse_override(item: str) -> tuple[str, Any]:
    """'train.max_steps=10' -> ('train.max_steps', 10): the value is read as YAML."""
    key, sep, value = item.partition("=")
    if not sep or key.count(".") != 1 or not all(key.split(".")):
        raise PapersimError(f"override {item!r}: write it as section.key=value, e.g. train.max_steps=10")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise PapersimError(f"override {item!r}: value is not valid YAML: {exc}") from None


def read_profile(path: str | Path) -> dict[str, Any]:
    """A profile file ({section: {key: value}}, YAML) as overrides {'section.key': value}."""
    path = Path(path)
    doc = _read_yaml(path, "no such profile file (e.g. profiles/quality.yaml)")
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise PapersimError(f"{path}: a profile maps sections to {{key: value}}, e.g. train: {{max_steps: 300}}")
    return {f"{section}.{key}": value for section, values in doc.items() for key, value in values.items()}


def override_params(text: str, overrides: dict[str, Any], where: str = "params.yaml") -> str:
    """params.yaml's text with `section.key` values replaced; comments and order are kept.

    Only existing keys can be overridden: a typo is an error, not a silently ignored setting.
    """
    from io import StringIO

    from ruamel.yaml import YAML

    rt = YAML()  # round-trip mode: comments, order and quoting survive
    rt.preserve_quotes = True
    rt.width = 4096
    doc = rt.load(text) or {}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section not in doc or not isinstance(doc[section], dict):
            raise PapersimError(f"override {key!r}: {where} has no section {section!r} "
                                f"(sections: {', '.join(map(str, doc))})")
        if name not in doc[section]:
            raise PapersimError(f"override {key!r}: {where}: {section} has no key {name!r} "
                                f"(keys: {', '.join(map(str, doc[section]))})")
        doc[section][name] = value
    out = StringIO()
    rt.dump(doc, out)
    return out.getvalue()


def _config_class(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(__import__(module, fromlist=[name]), name)


def check_params(path: Path) -> list[str]:
    """Build every stage's config from params.yaml; return the sections checked."""
    params = read_params(path)
    unknown = sorted(set(params) - set(STAGE_CONFIGS))
    if unknown:
        raise PapersimError(f"{path}: unknown section(s) {', '.join(unknown)}; stages: {', '.join(STAGE_CONFIGS)}")
    for section, spec in STAGE_CONFIGS.items():
        if section in params:
            build_config(_config_class(spec), params[section], f"{path}: {section}")
    return [s for s in STAGE_CONFIGS if s in params]
