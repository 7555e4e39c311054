"""`papersim web`: one resident process serving the pages of papersim.web.pages, the model loaded once.

A small Starlette application rendering Jinja2 templates with autoescaping on: no JavaScript and no
build step. Every page answers HTML, or JSON with the same fields when asked (`Accept:
application/json` or `?format=json`). Only GET and HEAD: the pages never change the registry.
"""

import logging
import tempfile
import threading
from http import HTTPStatus
from importlib.resources import files
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from papersim import markup
from papersim.errors import PapersimError
from papersim.lifecycle.retrain import RetrainConfig, retrain_config
from papersim.retrieval.filters import show_date
from papersim.web import pages
from papersim.web.models import (
    REGISTRY_REFS,
    WORKSPACE,
    Model,
    ModelStore,
    Registry,
    RegistryUnavailable,
    load_model,
    read_report,
)

# The pages run no script: escaping keeps paper text inert, and this policy stops any that slipped through.
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                                      "base-uri 'none'; frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
MAX_REQUEST_LINE = 1 << 20  # a query far over MAX_QUERY_CHARS still reaches the app and gets the page naming the rule
log = logging.getLogger("papersim.web")


def wants_json(request: Request) -> bool:
    if "format" in request.query_params:
        return request.query_params["format"] == "json"
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


class DriftPlot:
    """The drift-history PNG (papersim.lifecycle.drift.save_drift_plot), drawn again only when the
    history changed; one drawing at a time (pyplot is not thread-safe)."""

    def __init__(self, registry: Registry, p_value: float) -> None:
        self.registry, self.p_value = registry, p_value
        self._lock = threading.Lock()
        self._drawn: tuple[str, bytes] | None = None

    def png(self) -> bytes:
        from papersim.lifecycle.drift import save_drift_plot

        history = self.registry.drift_history()
        if history[["changed_share", "mmd2"]].isna().all().all():
            raise pages.NotFound("no drift measured yet: the first retrain run has no champion to compare with")
        key = history.to_json()
        with self._lock:
            if self._drawn is None or self._drawn[0] != key:
                with tempfile.TemporaryDirectory() as tmp:
                    save_drift_plot(history, Path(tmp) / "drift.png", self.p_value)
                    self._drawn = (key, (Path(tmp) / "drift.png").read_bytes())
            return self._drawn[1]


def _marked(store: ModelStore, text: str, words: list[str]):
    """`text` as HTML (math rendered) with the words of `words` marked, matched through the served index's
    stemmer (so "network" marks "networks")."""
    stemmer = store.served.index.bm25.stemmer
    stem = (lambda w: stemmer.stemWord(w)) if stemmer is not None else (lambda w: w)
    return markup.mark_words(text, {stem(w.lower()) for w in words}, stem)


def create_app(store: ModelStore, cfg: RetrainConfig, ui: str | None = None) -> Starlette:
    """The pages over a loaded store; `ui` is the MLflow UI's address when the tracking store is a server."""
    env = Environment(loader=PackageLoader("papersim.web", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    markup.register(env)
    env.filters.update(show_date=show_date, link_label=pages.link_label,
                       marked=lambda text, words: _marked(store, text, words))
    style = (files("papersim.web") / "static" / "style.css").read_bytes()
    drift = DriftPlot(store.registry, cfg.drift_p_value)

    def respond(request: Request, template: str, page: dict, status: int = 200,
                served: Model | None = None) -> Response:
        """`served`: the model that answered the page, named at its top (a swap may have switched since)."""
        if wants_json(request):
            return JSONResponse(page, status, headers=HEADERS)
        html = env.get_template(template).render(page=page, served=(served or store.served).label,
                                                 path=request.url.path)
        return HTMLResponse(html, status, headers=HEADERS)

    def search(request: Request) -> Response:
        q, served = request.query_params, store.served
        return respond(request, "search.html", pages.search_page(
            served, q.get("q"), pages.parse_k(q.get("k")), q.get("mode") or pages.DEFAULT_MODE,
            pages.parse_filter(q)), served=served)

    def paper(request: Request) -> Response:
        served = store.served
        q = request.query_params
        return respond(request, "paper.html", pages.paper_page(
            served, request.path_params["paper_id"], pages.parse_k(q.get("k")), pages.parse_filter(q)), served=served)

    def compare(request: Request) -> Response:
        q = request.query_params
        return respond(request, "compare.html", pages.compare_page(
            store, cfg, q.get("a"), q.get("b"), q.get("q"), q.get("paper"), pages.parse_k(q.get("k")),
            q.get("mode") or pages.DEFAULT_MODE))

    def registry(request: Request) -> Response:
        return respond(request, "registry.html", pages.registry_page(store.registry, cfg, ui))

    def drift_png(request: Request) -> Response:
        return Response(drift.png(), media_type="image/png", headers=HEADERS)

    def health(request: Request) -> Response:
        served = store.served
        return JSONResponse({"status": "ok", "model": served.label, "version": served.version,
                             "papers": len(served.titles), "loading": store.loading})

    async def stylesheet(request: Request) -> Response:
        return Response(style, media_type="text/css", headers={**HEADERS, "Cache-Control": "max-age=3600"})

    def error(request: Request, status: int, message: str) -> Response:
        page = {"status": status, "title": HTTPStatus(status).phrase, "error": message}
        return respond(request, "error.html", page, status)

    async def on_papersim_error(request: Request, exc: PapersimError) -> Response:
        status = 404 if isinstance(exc, pages.NotFound) else 503 if isinstance(exc, RegistryUnavailable) else 400
        return error(request, status, str(exc))

    async def on_http_error(request: Request, exc: HTTPException) -> Response:
        message = {404: f"no page at {request.url.path[:200]!r}: the pages are /, /paper/<id>, /compare and "
                        "/registry", 405: "these pages only read (GET): nothing here changes the registry; "
                                          "promote with `papersim registry promote`"}
        answer = error(request, exc.status_code, message.get(exc.status_code, str(exc.detail)))
        answer.headers.update(exc.headers or {})  # 405: Allow: GET, HEAD
        return answer

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path)
        return error(request, 500, f"the page failed ({type(exc).__name__}); the server keeps answering")

    routes = [Route("/", search), Route("/paper/{paper_id:path}", paper), Route("/compare", compare),
              Route("/registry", registry), Route("/registry/drift.png", drift_png), Route("/health", health),
              Route("/static/style.css", stylesheet)]
    return Starlette(routes=routes, exception_handlers={PapersimError: on_papersim_error,
                                                        HTTPException: on_http_error, Exception: on_crash})


def served_model(ref: str | None, index: Path, registry: Registry, root: Path) -> Model:
    """What `papersim web` serves: the workspace index (no --model), a registry version (champion,
    challenger, a number: its own encoder and index) or an encoder folder with --index, as `papersim search`."""
    if ref is None:
        return load_model(WORKSPACE, f"workspace index {index}", None, index,
                          report=read_report(root / "reports/evaluate.json"))
    if ref in REGISTRY_REFS or ref.isdigit():
        model = registry.load(registry.find(ref))
        model.ref = ref
        return model
    return load_model(ref, f"index {index} with encoder {ref}", Path(ref), index)


def serve(ref: str | None, index: Path, host: str, port: int, root: Path = Path(".")) -> None:
    """Load the model once, then answer pages until stopped (Ctrl-C)."""
    import uvicorn

    from papersim.lifecycle import tracking

    cfg = retrain_config(root / "params.yaml")
    registry = Registry(cfg.model_name, root)
    served = served_model(ref, index, registry, root)
    app = create_app(ModelStore(served, registry, index), cfg, pages.tracking_ui(tracking.tracking_uri()))
    print(f"papersim web: {served.label}, {len(served.titles)} papers; pages on http://{host}:{port}/ "
          "(Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", h11_max_incomplete_event_size=MAX_REQUEST_LINE)
