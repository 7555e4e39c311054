"""What the pages answer from: the served model, and registry versions for compare, each loaded on first use
and kept. A model served by alias (champion, challenger) follows its alias: a version promoted since (a
retrain that won the gate, a refresh, a rollback) is loaded beside the served one, in the background, and
served once it is fully loaded; requests are answered by the old version meanwhile, never held by the
load. Read-only: nothing here sets an alias or a tag."""

import json
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path

from papersim.errors import PapersimError
from papersim.retrieval.search import SearchIndex, attach_encoder, load_search_index

REGISTRY_REFS = ("champion", "challenger")
DRIFT_KEYS = ("drift.changed_share", "drift.mmd2", "drift.p_value")  # what the retrain flow logs per run
log = logging.getLogger("papersim.web")
WORKSPACE = "workspace"  # the index the pipeline built in this repository, not a registered version
NO_DETAILS = ("this index folder was built before index folders held papers.parquet: titles only; rebuild it "
              "(`dvc repro build_index`, or the main command) to see abstracts, sources and groups")


METADATA = ("authors", "date", "updated", "url", "venue", "categories")  # what ingest keeps when a source has it
LIST_METADATA = ("authors", "categories", "groups")


def _lists(column) -> list[list[str]]:
    return [[str(v) for v in values] if values is not None else [] for values in column]


def _texts(column) -> list[str | None]:
    return [None if v is None or (isinstance(v, float) and v != v) else str(v) for v in column]


class RegistryUnavailable(PapersimError):
    """The tracking store did not answer (a stopped tracking server): the pages say so with a 503."""


class Model:
    """A loaded index with its query encoder, and the columns a page reads by row as plain lists (a page
    of 10 hits reads 10 items; SearchIndex.row_of rebuilds its dict on every call)."""

    def __init__(self, ref: str, label: str, index: SearchIndex, version: str | None = None,
                 report: dict | None = None) -> None:
        self.ref, self.label, self.index, self.version, self.report = ref, label, index, version, report
        self.row_of = dict(zip(index.ids["paper_id"].tolist(), range(len(index.ids))))
        self.titles = index.ids["title"].tolist()
        papers = getattr(index, "papers", None)  # papers.parquet: None for a folder built without it
        self.details = None if papers is None else {
            "abstract": papers["abstract"].tolist(), "source": papers["source"].tolist(),
            "groups": _lists(papers["groups"]),
            **{c: _lists(papers[c]) if c in LIST_METADATA else _texts(papers[c])
               for c in METADATA if c in papers.columns}}

    @property
    def details_note(self) -> str | None:
        return None if self.details is not None else NO_DETAILS

    def paper(self, paper_id: str) -> dict:
        """paper_id, title, abstract, source, groups and metadata (authors, date, updated, link, venue,
        categories) of an indexed paper: None or empty where it has none (abstract None without details)."""
        row = self.row_of[paper_id]
        details = self.details or {}
        found = {c: details[c][row] if c in details else [] if c in LIST_METADATA else None
                 for c in ("abstract", "source", "groups", *METADATA)}
        link = found.pop("url")  # the paper's own address; `url` is its page here
        found["link"] = link if link and link.startswith(("https://", "http://")) else None  # never javascript:
        return {"paper_id": paper_id, "title": self.titles[row], **found}


def load_model(ref: str, label: str, encoder: Path | None, index: Path, version: str | None = None,
               report: dict | None = None) -> Model:
    """An index folder with its encoder (None: the one its index.json serves) on the serving backend
    (`auto`: OpenVINO on CPUs, as SearchService), refused when the weights are not the index's."""
    si = load_search_index(Path(index))
    attach_encoder(si, encoder, backend="auto")
    return Model(ref, label, si, version, report)


def read_report(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


class Registry:
    """One model's registered versions, read through papersim.lifecycle and re-read at most every `ttl_s`
    seconds: a promotion made with `papersim registry promote` shows within that time."""

    def __init__(self, model_name: str, root: Path, ttl_s: float = 10.0) -> None:
        self.model_name, self.root, self.ttl_s = model_name, Path(root), ttl_s
        self._lock = threading.Lock()
        self._versions: list[dict] | None = None
        self._read_at = 0.0

    def versions(self) -> list[dict]:
        """Every version, newest first: version, run_id, tags, aliases, created, description."""
        from papersim.lifecycle import tracking

        with self._lock:
            if self._versions is None or time.monotonic() - self._read_at > self.ttl_s:
                self._versions = _ask(tracking.model_versions, self.model_name)
                self._read_at = time.monotonic()
            return self._versions

    def champion_history(self) -> list[str]:
        from papersim.lifecycle import tracking

        return _ask(tracking.champion_history, self.model_name)

    def drift_history(self):
        """Earlier retrain runs' drift metrics (papersim.lifecycle.drift.history_frame), oldest first."""
        from papersim.lifecycle import tracking
        from papersim.lifecycle.drift import history_frame

        return history_frame(_ask(tracking.flow_metric_history, "retrain", list(DRIFT_KEYS)))

    def find(self, ref: str) -> dict:
        """The version named by an alias or a number; PapersimError naming the choices otherwise."""
        versions = self.versions()
        known = ", ".join(v["version"] for v in versions) or "none"
        if ref.isdigit():
            found = [v for v in versions if v["version"] == str(int(ref))]
        elif ref in REGISTRY_REFS:
            found = [v for v in versions if ref in v["aliases"]]
        else:
            raise PapersimError(f"unknown version {ref!r}: use champion, challenger, {WORKSPACE} or a version "
                                f"number (model {self.model_name!r} has versions: {known})")
        if not found:
            what = f"no version {ref}" if ref.isdigit() else f"no {ref} version"
            raise PapersimError(f"model {self.model_name!r} has {what} (versions: {known}; aliases: "
                                f"{', '.join(_aliases(versions)) or 'none'})")
        return found[0]

    def load(self, found: dict) -> Model:
        """A version's own encoder and index, from the registry cache (downloaded there once)."""
        from papersim.lifecycle.registry import resolve
        from papersim.lifecycle.versions import REGISTRY_CACHE, Version

        version = Version(resolve(self.model_name, found["version"], self.root / REGISTRY_CACHE))
        try:
            report = version.report()
        except PapersimError:
            report = None
        return load_model(found["version"], f"{self.model_name} v{found['version']}", version.encoder,
                          version.index, found["version"], report)


def _aliases(versions: list[dict]) -> list[str]:
    return [f"{alias} v{v['version']}" for v in versions for alias in sorted(v["aliases"])]


def _ask(call, *args):
    """A registry read; a store that does not answer becomes RegistryUnavailable, not a traceback."""
    from papersim.lifecycle import tracking

    try:
        return call(*args)
    except PapersimError:
        raise
    except Exception as exc:  # MLflow's own errors: only papersim.lifecycle.tracking imports mlflow
        raise RegistryUnavailable(f"the model registry at {_without_password(tracking.tracking_uri())} did not "
                                  f"answer ({type(exc).__name__}: {str(exc)[:200]})") from None


def _without_password(uri: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.username or parts.password:
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts)


class ModelStore:
    """The served model and, for compare, the versions asked for by alias, number or `workspace`; at
    most `keep` of those stay loaded besides the served one (each holds an encoder and an index).

    Served by alias, the model follows the alias from a background thread, one at a time, started by a
    request at most every `registry.ttl_s`: it re-reads the registry and, when the alias names another
    version, loads that version beside the served one and switches the served reference only once the
    load is done. A request never waits for the registry or a load: it gets the model served at that
    moment. A registry that does not answer, or a load that fails, keeps the served model (the failure
    logged, tried again a TTL later); an alias moved again during a load is read again before the
    switch, and a version no longer named is dropped, not served, for the newest."""

    def __init__(self, served: Model, registry: Registry, workspace_index: Path, keep: int = 3) -> None:
        self._served, self.registry, self.workspace_index, self.keep = served, registry, Path(workspace_index), keep
        self._loaded: OrderedDict[str, Model] = OrderedDict()
        self._lock = threading.Lock()  # one load at a time: two requests for a new version load it once
        self._follow = threading.Lock()  # guards the follower's state below, held for a moment only
        self._follower: threading.Thread | None = None
        self._checked_at = time.monotonic()  # `served` came from a registry read just now
        self.loading: str | None = None  # the version loading beside the served one, until switched in or dropped

    @property
    def served(self) -> Model:
        """The model served now. Served by alias, a request after `registry.ttl_s` also starts the check
        of the alias in the background (at most one at a time); this request does not wait for it."""
        current = self._served
        if current.ref in REGISTRY_REFS and time.monotonic() - self._checked_at >= self.registry.ttl_s:
            with self._follow:
                if (self._follower is None or not self._follower.is_alive()) and \
                        time.monotonic() - self._checked_at >= self.registry.ttl_s:
                    self._follower = threading.Thread(target=self._follow_alias, name="papersim-web-follow",
                                                      daemon=True)
                    self._follower.start()
        return current

    def _follow_alias(self) -> None:
        """Load the version the alias names now, beside the served one, and switch to it when loaded;
        read the alias again after the load, so that a version it no longer names is never served."""
        ref = self._served.ref
        try:
            while True:
                try:
                    found = self.registry.find(ref)
                except PapersimError as exc:  # unreachable store, or the alias gone (a rollback mid-way): keep serving
                    log.warning("keep serving %s: %s", self._served.label, exc)
                    return
                if found["version"] == self._served.version:
                    return
                self.loading = found["version"]
                start = time.perf_counter()
                try:
                    model = self.registry.load(found)
                except Exception:  # a broken or missing version: the served one stays, tried again a TTL later
                    log.exception("could not load %s v%s (%s): keep serving %s, trying again in %g s",
                                  self.registry.model_name, found["version"], ref, self._served.label,
                                  self.registry.ttl_s)
                    return
                model.ref = ref
                try:
                    now = self.registry.find(ref)["version"]
                except PapersimError:
                    now = found["version"]  # the store stopped answering during the load: serve what it named
                if now != found["version"]:
                    log.info("%s moved to v%s while v%s loaded: v%s dropped", ref, now, found["version"],
                             found["version"])
                    continue
                previous, self._served = self._served, model
                log.info("serving %s (%s) in place of %s, loaded in %.1f s", model.label, ref, previous.label,
                         time.perf_counter() - start)
                return
        finally:
            self.loading = None
            self._checked_at = time.monotonic()

    def get(self, ref: str) -> Model:
        ref = ref.strip()
        if ref == WORKSPACE:
            if self._served.ref == WORKSPACE:
                return self._served
            return self._cached(WORKSPACE, lambda: load_model(
                WORKSPACE, f"workspace index {self.workspace_index}", None, self.workspace_index,
                report=read_report(self.registry.root / "reports/evaluate.json")))
        found = self.registry.find(ref)
        if self._served.version == found["version"]:
            return self._served
        return self._cached(f"v{found['version']}", lambda: self.registry.load(found))

    def _cached(self, key: str, load) -> Model:
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            model = load()
            self._loaded[key] = model
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)
            return model
