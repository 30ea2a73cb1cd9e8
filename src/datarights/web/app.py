"""`datarights serve`: the owners' web page and its JSON API (FastAPI + Jinja2, no JavaScript).

Each handler is a few lines around one `Ledger` call. Owners sign in with their token (a session
cookie signed with a per-server secret; forms carry a CSRF token derived from it) or call the API
with `Authorization: Bearer <token>`. Owner-scoped routes answer 404 for another owner's ids (the
same answer as for ids that do not exist); admin routes answer 403 to owners. Processing runs in
one background thread per server; a job's stage and progress are rows in the ledger, so a killed
server leaves a job that the next start marks failed (its requests go back to pending).

Before a handler runs, the `Guard` middleware refuses what no handler should see: a request body
over its route's limit (limits.MAX_JSON_BODY, or MAX_UPLOAD_REQUEST for the upload routes) is 413
before it is read, and a POST that carries no valid token or session is 401 before its body is
read at all (so nothing is spooled to disk for it). The JSON API takes `application/json` bodies
only, and with a session cookie (instead of a bearer token) a state-changing API call must also
carry the session's CSRF token in `X-CSRF-Token`. Work that parses uploads, decodes images or
looks them up runs on one worker thread, never on the event loop, so that a page such as
`GET /api/me` answers while lookups run (one thread: the work holds the GIL, and two lookup
threads on 2 cores served 26 lookups/s against one thread's 42). Long work — processing opt-outs,
attributing a paid generation — is queued as a job and run by a worker process
(`ledger/worker.py`), never in a request; its page shows its stage and progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import io
import os
import re
import secrets
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import DatarightsError, NotFound
from ..ledger.core import Ledger, hash_token
from ..ledger.worker import start as start_worker
from ..ledger.rules import Conflict, NeedsConfirmation, NotAllowed
from ..limits import MAX_ID, MAX_JSON_BODY, MAX_UPLOAD, MAX_UPLOAD_REQUEST, loads_json
from .forms import Form as ParsedForm
from .forms import parse_form

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
COOKIE = "datarights_session"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
UPLOAD_ROUTES = ("/check", "/admin/attribute", "/api/lookup", "/api/admin/attribute")
"""The routes whose body may hold an image (up to MAX_UPLOAD_REQUEST bytes); every other body is at
most MAX_JSON_BODY."""
WORK_THREADS = 1
"""Threads off the event loop for uploads: form parsing, image decoding, lookups."""
REQUEST_THREADS = 8
"""Threads for the light handlers (pages and API calls that read a few ledger rows)."""
UPLOAD_LABEL = "the uploaded image"


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def create_app(ledger: str | Path, process_options: dict | None = None, max_upload: int = MAX_UPLOAD) -> FastAPI:
    """The app for one ledger. `process_options` are passed to `Ledger.process` by the admin's button."""
    led = Ledger(ledger)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        # Few request threads: on 2 cores, 40 threads (anyio's default) contending for the GIL under a
        # burst of uploads made a trivial page wait; the heavy work has its own pool anyway.
        anyio.to_thread.current_default_thread_limiter().total_tokens = REQUEST_THREADS
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="datarights", description="Works, opt-outs, erase certificates and earnings of the owners "
                                                  "whose images trained a model.", lifespan=lifespan,
                  docs_url=None, redoc_url=None)        # Swagger UI and ReDoc load scripts from a CDN: our own page
    secret = secrets.token_bytes(32)
    worker: dict = {"process": None, "error": None, "lock": threading.Lock(), "log": None}
    opts = dict(process_options or {})
    pool = ThreadPoolExecutor(max_workers=WORK_THREADS, thread_name_prefix="datarights-work")
    _warm(led, pool)
    worker["log"] = led.root / "worker.log"

    async def heavy(fn, *args, **kw):
        """Run blocking work on the worker thread; the event loop stays free for other requests."""
        return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args, **kw))

    # ------------------------------------------------------------------ identity
    def _sign(value: str) -> str:
        return hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()

    def _session(request: Request) -> dict | None:
        raw = request.cookies.get(COOKIE, "")
        value, _, mac = raw.rpartition(".")
        if not value or len(raw) > 4096 or not hmac.compare_digest(_sign(value), mac):
            return None
        oid, role, bound, name = value.split("|", 3)
        current = led.token_hash_of(int(oid))
        if current is None or not hmac.compare_digest(bound, _bind(current)):
            return None  # the token this session was opened with has been reissued (or the owner is gone)
        return {"id": int(oid), "role": role, "name": name, "csrf": _sign("csrf:" + raw)}

    def _bind(token_hash: str) -> str:
        return _sign("token:" + token_hash)[:16]

    def _bearer(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def identify(request: Request) -> dict | None:
        """Who sent the request (a bearer token or a signed session), or None; reads headers only."""
        token = _bearer(request)
        if token is None:
            return _session(request)
        try:
            return led.owner_by_token(token)
        except DatarightsError:
            return None

    def user(request: Request, admin: bool = False) -> dict:
        who = identify(request)
        if who is None:
            raise HTTPError(401, "unknown token" if _bearer(request) is not None else "sign in with your token first")
        if _bearer(request) is None and request.url.path.startswith("/api/") and request.method not in SAFE_METHODS \
                and not hmac.compare_digest(request.headers.get("x-csrf-token", ""), who["csrf"]):
            raise HTTPError(403, "an API call signed in by cookie must send the session's CSRF token in the "
                                 "X-CSRF-Token header (or use a bearer token)")
        if admin and who["role"] != "admin":
            raise HTTPError(403, "this page is for the model owner (admin) only")
        return who

    async def form_of(request: Request, who: dict, csrf: bool = True) -> ParsedForm:
        """The request's form, parsed on a worker thread; a form signed in by cookie must carry the
        session's CSRF token."""
        # on the upload worker thread (not on a request thread: many parsing at once contend for the GIL)
        form = await heavy(parse_form, await request.body(), request.headers.get("content-type", ""))
        if csrf and _bearer(request) is None and not hmac.compare_digest(form.get("csrf"), who.get("csrf", "")):
            raise HTTPError(403, "this form has expired or did not come from this site; reload the page and try "
                                 "again")
        return form

    def upload(form: ParsedForm) -> Path:
        """The form's image, written to a private temporary file (on a worker thread)."""
        if "file" not in form.files:
            raise HTTPError(400, "choose an image file to upload")
        data = form.files["file"][1]
        if len(data) > max_upload:
            raise HTTPError(413, f"the image is larger than {max_upload // (1024 * 1024)} MB; choose a smaller one")
        if not data:
            raise HTTPError(400, "the uploaded file is empty; choose an image")
        fd, name = tempfile.mkstemp(prefix="datarights-upload-", suffix=".img")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return Path(name)

    def with_upload(form: ParsedForm, fn, *args, **kw):
        """fn(path of the form's image, *args, **kw) on a worker thread; the temporary file is removed after."""
        path = upload(form)
        try:
            return fn(path, *args, **kw)
        finally:
            path.unlink(missing_ok=True)

    def page(request: Request, name: str, who: dict | None, http_status: int = 200, **ctx) -> HTMLResponse:
        return TEMPLATES.TemplateResponse(request, name, {"who": who, **ctx}, status_code=http_status)

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/") or request.url.path == "/openapi.json"

    def error_response(request: Request, status: int, message: str, who: dict | None = None) -> Response:
        message = redact(message)
        if wants_json(request):
            return JSONResponse({"error": message}, status_code=status)
        return page(request, "error.html", who, status, message=message, status=status)

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, e: HTTPError):
        who = await run_in_threadpool(_session, request) if e.status != 401 else None
        return error_response(request, e.status, e.message, who)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, e: NotFound):
        return await _http_error(request, HTTPError(404, "not found"))

    @app.exception_handler(NotAllowed)
    async def _not_allowed(request: Request, e: NotAllowed):
        return await _http_error(request, HTTPError(403, str(e)))

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, e: Conflict):
        if wants_json(request):
            return JSONResponse({"error": redact(str(e)), **e.details}, status_code=409)
        return await _http_error(request, HTTPError(409, str(e)))

    @app.exception_handler(StarletteHTTPException)
    async def _starlette(request: Request, e: StarletteHTTPException):
        words = {404: "there is no such page", 405: "this page does not take that kind of request"}
        return await _http_error(request, HTTPError(e.status_code, words.get(e.status_code, str(e.detail))))

    @app.exception_handler(RequestValidationError)
    async def _malformed(request: Request, e: RequestValidationError):
        where = "; ".join(f"{'.'.join(str(x) for x in err.get('loc', ()))}: {err.get('msg')}" for err in e.errors()[:3])
        return await _http_error(request, HTTPError(400, f"malformed request ({where[:300]})"))

    @app.exception_handler(DatarightsError)
    async def _bad_input(request: Request, e: DatarightsError):
        return await _http_error(request, HTTPError(400, str(e)))

    app.add_middleware(Guard, identify=identify, refuse=error_response)

    # ------------------------------------------------------------------ sign in
    @app.get("/", response_class=HTMLResponse)
    def home(request: Request):
        who = _session(request)
        if who is None:
            return page(request, "signin.html", None)
        return RedirectResponse("/admin" if who["role"] == "admin" else "/works", status_code=303)

    @app.post("/signin")
    def signin(token: str = Form("")):
        try:
            who = led.owner_by_token(token.strip())
        except DatarightsError:
            raise HTTPError(401, "unknown token") from None
        value = f"{who['id']}|{who['role']}|{_bind(hash_token(token.strip()))}|{who['name']}"
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(COOKIE, f"{value}.{_sign(value)}", httponly=True, samesite="strict")
        return resp

    @app.post("/signout")
    async def signout(request: Request):
        await form_of(request, await run_in_threadpool(user, request))
        resp = RedirectResponse("/", status_code=303)
        resp.delete_cookie(COOKIE)
        return resp

    # ------------------------------------------------------------------ an owner's pages
    @app.get("/works", response_class=HTMLResponse)
    def works_page(request: Request, page_no: int = 0):
        who = user(request)
        works = led.works(who["name"], limit=100, offset=100 * min(max(page_no, 0), MAX_ID // 100))
        for w in works:
            w["thumb"] = thumb(led.work_file(w["id"]))
        return page(request, "works.html", who, works=works, page_no=page_no,
                    total=next(o["works"] for o in led.owners() if o["name"] == who["name"]))

    @app.get("/check", response_class=HTMLResponse)
    def check_form(request: Request):
        return page(request, "check.html", user(request), matches=None)

    @app.post("/check", response_class=HTMLResponse)
    async def check(request: Request):
        who = await run_in_threadpool(user, request)
        form = await form_of(request, who)
        matches, uploaded = await heavy(with_upload, form, _lookup_with_thumbs, led,
                                        None if who["role"] == "admin" else who["name"])
        return page(request, "check.html", who, matches=matches, uploaded=uploaded)

    @app.get("/optouts", response_class=HTMLResponse)
    def optouts_page(request: Request):
        who = user(request)
        return page(request, "optouts.html", who, optouts=led.optouts(who["name"]),
                    concepts=led.concepts(who["name"]) if who["role"] != "admin" else [])

    @app.post("/optouts")
    async def optout_form(request: Request):
        who = await run_in_threadpool(user, request)
        form = await form_of(request, who)
        works = [x for x in form.getlist("works") if x.strip()]
        concept = (form.get("concept") or form.get("other_concept")).strip() or None
        try:
            r = await run_in_threadpool(led.optout, who["name"], works=works or None,
                                        concept=concept if not works else None,
                                        anchor=form.get("anchor").strip() or None, confirm=form.get("confirm") == "yes")
        except NeedsConfirmation as e:       # say what would be erased, and ask once more
            return page(request, "confirm.html", who, message=str(e), works=works, concept=e.details.get("concept"),
                        total=e.details.get("works"))
        return RedirectResponse(f"/optouts/{r['id']}", status_code=303)

    @app.get("/optouts/{request_id}", response_class=HTMLResponse)
    def optout_page(request: Request, request_id: int):
        who = user(request)
        owner = None if who["role"] == "admin" else who["name"]
        return page(request, "optout.html", who, r=led.optout_status(request_id, owner))

    @app.post("/optouts/{request_id}/review")
    async def optout_review(request: Request, request_id: int):
        who = await run_in_threadpool(user, request)
        form = await form_of(request, who)
        await run_in_threadpool(led.review, request_id, who["name"], form.get("decision") == "approve",
                                form.get("note"))
        return RedirectResponse(f"/optouts/{request_id}", status_code=303)

    @app.get("/certificates/{cert_id}.json")
    def certificate_file(request: Request, cert_id: int):
        who = user(request)
        cert = led.certificate(cert_id, None if who["role"] == "admin" else who["name"])
        return JSONResponse(cert, headers={"content-disposition": f'attachment; filename="certificate-{cert_id}.json"'})

    @app.get("/certificates/{cert_id}", response_class=HTMLResponse)
    def certificate_page(request: Request, cert_id: int):
        from ..ledger.certificate import ATTACK_WORDS, verify_certificate

        who = user(request)
        cert = led.certificate(cert_id, None if who["role"] == "admin" else who["name"])
        doc = cert["document"]
        key = led.public_key()
        return page(request, "certificate.html", who, cert_id=cert_id, doc=doc, cert=cert, key=key,
                    check=verify_certificate(cert, public_key=key), evidence=led.evidence(doc["job"]),
                    attack_words=ATTACK_WORDS)

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def api_docs(request: Request):
        """The JSON API's routes, from the OpenAPI document (no scripts, nothing from elsewhere)."""
        routes = [{"method": m.upper(), "path": p, "summary": op.get("summary", ""),
                   "description": (op.get("description") or "").split("\n\n")[0]}
                  for p, ops in app.openapi()["paths"].items() for m, op in ops.items()]
        return page(request, "api.html", _session(request), routes=routes)

    @app.get("/.well-known/datarights-keys.json")
    def published_keys():
        """The ledger's signer keys: pin one to check its certificates (no sign-in needed)."""
        return led.published_keys()

    @app.get("/statements", response_class=HTMLResponse)
    def statements_page(request: Request, period: str | None = None):
        who = user(request)
        months = led.earnings(who["name"])
        period = period or (months[-1]["period"] if months else _this_month())
        return page(request, "statements.html", who, months=months, chart=bar_chart(months),
                    st=led.statement(who["name"], period))

    # ------------------------------------------------------------------ the model owner's pages
    def admin_view(request: Request, who: dict) -> HTMLResponse:
        return page(request, "admin.html", who, pending=led.optouts(status="pending"),
                    review=[r for r in led.optouts(status="review") if r["review_by"] == "admin"],
                    jobs=_shown(led.jobs(public=True)[:20]), running=_running(), error=worker["error"],
                    form_key=secrets.token_urlsafe(16))

    @app.get("/admin", response_class=HTMLResponse)
    def admin_page(request: Request):
        return admin_view(request, user(request, admin=True))

    @app.get("/admin/requests", response_class=HTMLResponse)
    def admin_requests(request: Request):
        return page(request, "admin_requests.html", user(request, admin=True), optouts=led.optouts())

    @app.get("/admin/certificates", response_class=HTMLResponse)
    def admin_certificates(request: Request):
        return page(request, "admin_certificates.html", user(request, admin=True), certificates=led.certificates())

    @app.get("/admin/owners", response_class=HTMLResponse)
    def admin_owners(request: Request):
        return page(request, "admin_owners.html", user(request, admin=True), owners=led.owners())

    @app.post("/admin/process")
    async def admin_process(request: Request):
        await form_of(request, await run_in_threadpool(user, request, True))
        start_processing()
        return RedirectResponse("/admin", status_code=303)

    @app.post("/admin/attribute", response_class=HTMLResponse)
    async def admin_attribute(request: Request):
        """Queue a paid generation (the worker attributes it) and go to its page: reloading that page,
        or sending the same form again (its key), records nothing new."""
        who = await run_in_threadpool(user, request, True)
        form = await form_of(request, who)
        job = await heavy(with_upload, form, led.queue_attribution, form.get("prompt"), form.get("revenue"),
                          form.get("method") or None, client_key=form.get("key") or None,
                          currency=form.get("currency") or "USD", label=UPLOAD_LABEL)
        if job["id"] is None:                       # recorded before: its event
            return RedirectResponse(f"/admin/payments/{job['result']['event_id']}", status_code=303)
        start_processing()
        return RedirectResponse(f"/admin/jobs/{job['id']}", status_code=303)

    @app.get("/admin/jobs/{job_id}", response_class=HTMLResponse)
    def admin_job_page(request: Request, job_id: int):
        who = user(request, admin=True)
        _running()
        j = _shown([led.job(job_id, public=True)])[0]
        ev = led.event(j["result"]["event_id"]) if j["kind"] == "attribute" and j.get("result") else None
        return page(request, "job.html", who, j=j, event=ev)

    @app.get("/admin/payments/{event_id}", response_class=HTMLResponse)
    def admin_payment_page(request: Request, event_id: int):
        return page(request, "payment.html", user(request, admin=True), event=led.event(event_id))

    def _running() -> bool:
        p = worker["process"]
        if p is not None and p.poll() is not None:        # it finished: keep what it said last, if it failed
            worker["process"] = None
            if p.returncode != 0:
                worker["error"] = _last_error(worker["log"])
        return worker["process"] is not None

    def start_processing() -> bool:
        """Start the worker process unless one runs (it takes whatever work is queued, new work too)."""
        with worker["lock"]:
            if _running():
                return False
            led.root.mkdir(parents=True, exist_ok=True)
            worker["error"] = None
            worker["process"] = start_worker(led.location, opts, worker["log"])
            return True

    # ------------------------------------------------------------------ JSON API
    @app.get("/api/me")
    def api_me(request: Request):
        who = user(request)
        return {"id": who["id"], "name": who["name"], "role": who["role"]}

    @app.get("/api/works")
    def api_works(request: Request, limit: int = 1000, offset: int = 0):
        return {"works": led.works(user(request)["name"], limit=min(max(limit, 1), 1000), offset=max(offset, 0))}

    @app.get("/api/works/{work_id}")
    def api_work(request: Request, work_id: int):
        return led.work(user(request)["name"], work_id)

    @app.get("/api/works/{work_id}/image")
    def api_work_image(request: Request, work_id: int):
        led.work(user(request)["name"], work_id)
        p = led.work_file(work_id)
        if p is None:
            raise HTTPError(404, "the work's file is no longer on disk")
        return Response(p.read_bytes(), media_type="image/png")

    @app.post("/api/lookup", openapi_extra=_upload_body({}))
    async def api_lookup(request: Request):
        """Registered works that are the uploaded image (field `file`), a near copy, or look alike."""
        who = await run_in_threadpool(user, request)
        form = await form_of(request, {}, csrf=False)
        return {"matches": await heavy(with_upload, form, led.lookup, label=UPLOAD_LABEL,
                                       viewer=None if who["role"] == "admin" else who["name"])}

    @app.get("/api/optouts")
    def api_optouts(request: Request):
        return {"optouts": led.optouts(user(request)["name"])}

    @app.post("/api/optouts", status_code=201)
    async def api_optout(request: Request):
        who = await run_in_threadpool(user, request)
        body = await _json(request)
        return await run_in_threadpool(led.optout, who["name"], works=body.get("works"), concept=body.get("concept"),
                                       anchor=body.get("anchor"), model_id=body.get("model_id"),
                                       confirm=body.get("confirm", False))

    @app.post("/api/optouts/{request_id}/review")
    async def api_optout_review(request: Request, request_id: int):
        """Decide a request in review: {"approve": true|false, "note": "..."} (the concept's owner for the
        model owner's request on their concept; the model owner for a concept with no single owner)."""
        who = await run_in_threadpool(user, request)
        body = await _json(request)
        if not isinstance(body.get("approve"), bool):
            raise HTTPError(400, "say whether you approve: {\"approve\": true} or {\"approve\": false}")
        return await run_in_threadpool(led.review, request_id, who["name"], body["approve"], body.get("note", ""))

    @app.get("/api/optouts/{request_id}")
    def api_optout_status(request: Request, request_id: int):
        who = user(request)
        return led.optout_status(request_id, None if who["role"] == "admin" else who["name"])

    @app.get("/api/certificates")
    def api_certificates(request: Request):
        who = user(request)
        return {"certificates": led.certificates(None if who["role"] == "admin" else who["name"])}

    @app.get("/api/certificates/{cert_id}")
    def api_certificate(request: Request, cert_id: int):
        who = user(request)
        return led.certificate(cert_id, None if who["role"] == "admin" else who["name"])

    @app.get("/api/statements/{period}")
    def api_statement(request: Request, period: str):
        return led.statement(user(request)["name"], period)

    @app.get("/api/earnings")
    def api_earnings(request: Request):
        return {"months": led.earnings(user(request)["name"])}

    @app.get("/api/admin/optouts")
    def api_admin_optouts(request: Request, status: str | None = None):
        user(request, admin=True)
        return {"optouts": led.optouts(status=status)}

    @app.post("/api/admin/process", status_code=202)
    def api_admin_process(request: Request):
        user(request, admin=True)
        return {"started": start_processing(), "running": True}

    @app.get("/api/admin/jobs")
    def api_admin_jobs(request: Request):
        user(request, admin=True)
        running = _running()
        return {"jobs": _shown(led.jobs(public=True)), "running": running, "error": redact(worker["error"] or "") or None}

    @app.get("/api/admin/jobs/{job_id}")
    def api_admin_job(request: Request, job_id: int):
        user(request, admin=True)
        return _shown([led.job(job_id, public=True)])[0]

    @app.post("/api/admin/attribute", status_code=202, openapi_extra=_upload_body(
        {"prompt": {"type": "string"}, "revenue": {"type": "string", "example": "0.04"},
         "currency": {"type": "string", "default": "USD"},
         "method": {"type": "string", "default": "dtrak"}}, required=["prompt", "revenue"]))
    async def api_admin_attribute(request: Request):
        """Queue a paid generation: the uploaded image (`file`) is attributed by the worker and its revenue
        split by owner; poll /api/admin/jobs/{id} (its `result` names the event). Send an
        `Idempotency-Key` header: the same image and key again returns the first job (or event)."""
        await run_in_threadpool(user, request, True)
        form = await form_of(request, {}, csrf=False)
        job = await heavy(with_upload, form, led.queue_attribution, form.get("prompt"), form.get("revenue"),
                          form.get("method") or None, client_key=request.headers.get("idempotency-key") or None,
                          currency=form.get("currency") or "USD", label=UPLOAD_LABEL)
        if job["id"] is not None and job["status"] == "queued":
            start_processing()
        return job

    @app.get("/api/admin/payments/{event_id}")
    def api_admin_payment(request: Request, event_id: int):
        user(request, admin=True)
        return led.event(event_id)

    app.state.ledger = led
    app.state.start_processing = start_processing
    app.state.worker = worker
    app.state.pool = pool
    return app


class Guard:
    """ASGI middleware: bounded bodies, and no body read for a caller who is not signed in (see the
    module docstring). `identify(request)` reads headers only; `refuse(request, status, message)`
    renders the answer as the app does (a page, or JSON under /api/)."""

    def __init__(self, app, identify, refuse):
        self.app, self.identify, self.refuse = app, identify, refuse

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            return await self.app(scope, receive, send)
        request = Request(scope)
        limit = MAX_UPLOAD_REQUEST if scope["path"] in UPLOAD_ROUTES else MAX_JSON_BODY
        declared = request.headers.get("content-length")
        if declared is not None and not declared.strip().isdigit():
            return await self.refuse(request, 400, "the request's length is malformed")(scope, receive, send)
        if declared is not None and int(declared) > limit:
            return await self.refuse(request, 413, _too_large(limit))(scope, receive, send)
        if scope["path"] != "/signin" and await run_in_threadpool(self.identify, request) is None:
            return await self.refuse(request, 401, "sign in with your token first")(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return await self.refuse(request, 413, _too_large(limit))(scope, receive, send)
            more = message.get("more_body", False)
        chunks.reverse()

        async def replay():                       # the chunks as they came (no copy of the whole body)
            if chunks:
                return {"type": "http.request", "body": chunks.pop(), "more_body": bool(chunks)}
            return await receive()
        await self.app(scope, replay, send)


def _too_large(limit: int) -> str:
    return f"the request is larger than {limit // 1024:,} kB" if limit < 1024 * 1024 else \
        f"the request is larger than {limit / (1024 * 1024):.0f} MB; choose an image under {MAX_UPLOAD // (1024 * 1024)} MB"


_PATH = re.compile(r"(?<![\w:/])(/[\w.~+\-]+)(/[\w.~+\-]*)+")


def redact(message: str) -> str:
    """A message without this machine's file paths (an absolute path under an existing top folder),
    so that no answer tells a client where the server keeps its files."""
    def one(m):
        top = m.group(1)
        return "(a file on the server)" if os.path.isdir(top) else m.group(0)
    return _PATH.sub(one, message)


def _warm(led: Ledger, pool: ThreadPoolExecutor) -> None:
    """What the first lookup would otherwise do while other requests wait: load the image plugins,
    read the works' hashes, start the worker threads."""
    from PIL import Image

    Image.init()
    led._works_index()
    pool.submit(lambda: None).result()


def _last_error(log: Path | None) -> str | None:
    """The worker's last `error: ...` line (the CLI's one-line error), if it wrote one."""
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith("error: ")]
    except (OSError, AttributeError):
        return "the worker stopped unexpectedly"
    return lines[-1][7:] if lines else "the worker stopped unexpectedly"


def _shown(jobs: list[dict]) -> list[dict]:
    """Jobs as a web client sees them: an error message without server paths."""
    return [{**j, "error": redact(j["error"]) if j.get("error") else j.get("error")} for j in jobs]


def _upload_body(fields: dict, required: tuple | list = ()) -> dict:
    """The OpenAPI description of an upload form (parsed by `forms.parse_form`, not by FastAPI)."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file", *required],
        "properties": {"file": {"type": "string", "format": "binary"}, **fields}}}}}}


def _lookup_with_thumbs(path: Path, led: Ledger, viewer: str | None) -> tuple[list[dict], str | None]:
    matches = led.lookup(path, label=UPLOAD_LABEL, viewer=viewer)
    for m in matches:                                   # another owner's image is not shown
        m["thumb"] = thumb(led.work_file(m["work_id"])) if "work_id" in m else None
    return matches, thumb(path)


async def _json(request: Request) -> dict:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise HTTPError(415, "send the request body as JSON (Content-Type: application/json)")
    body = loads_json(await request.body(), "the request body")
    if not isinstance(body, dict):
        raise HTTPError(400, "the request body must be a JSON object")
    return body


def listen(host: str, port: int):
    """A socket bound and listening on host:port for uvicorn; a busy port or an address that is not
    this machine's is a one-line error (before the server prints that it serves)."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise DatarightsError(f"--host {host!r} is not an address of this machine ({getattr(e, 'strerror', None) or e})") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        why = "the port is already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        raise DatarightsError(f"cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def _this_month() -> str:
    from datetime import datetime, timezone
    return datetime.now(timezone.utc).strftime("%Y-%m")


def thumb(path: Path | None, size: int = 64) -> str | None:
    """A small PNG data URI of an image file (pixelated upscale for the 16x16 world), or None."""
    import base64

    from ..files import open_rgb

    if path is None:
        return None
    try:
        rgb, _ = open_rgb(path)
    except DatarightsError:
        return None
    from PIL import Image

    if max(rgb.size) > size:
        rgb.thumbnail((size, size))
    if max(rgb.size) < size:
        rgb = rgb.resize((size, size * rgb.height // rgb.width), Image.NEAREST)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def bar_chart(months: list[dict], width: int = 560, height: int = 160) -> str:
    """Earnings per month as an inline SVG bar chart (no JavaScript)."""
    if not months:
        return ""
    top = max(m["cents"] for m in months) or 1
    bw = width / len(months)
    bars = []
    for i, m in enumerate(months):
        h = (height - 30) * m["cents"] / top
        x = i * bw + 4
        amount = f'{m["cents"] / 100:.2f} {m.get("currency", "")}'.strip()
        bars.append(f'<rect x="{x:.1f}" y="{height - 20 - h:.1f}" width="{bw - 8:.1f}" height="{h:.1f}" fill="#4f7cff">'
                    f'<title>{m["period"]}: {amount}</title></rect>'
                    f'<text x="{x + (bw - 8) / 2:.1f}" y="{height - 5}" font-size="11" text-anchor="middle">{m["period"]}</text>'
                    f'<text x="{x + (bw - 8) / 2:.1f}" y="{height - 24 - h:.1f}" font-size="11" text-anchor="middle">'
                    f'{amount}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="earnings per month">{"".join(bars)}</svg>')


