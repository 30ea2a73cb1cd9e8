"""`datarights serve`: the owners' web page and its JSON API (FastAPI + Jinja2, no JavaScript).

Each handler is a few lines around one `Ledger` call. Owners sign in with their token (a session
cookie signed with a per-server secret; forms carry a CSRF token derived from it) or call the API
with `Authorization: Bearer <token>`. Owner-scoped routes answer 404 for another owner's ids (the
same answer as for ids that do not exist); admin routes answer 403 to owners. Processing runs in
one background thread per server; a job's stage and progress are rows in the ledger, so a killed
server leaves a job that the next start marks failed (its requests go back to pending).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import secrets
import tempfile
import threading
from pathlib import Path

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from ..errors import DatarightsError
from ..ledger.core import Ledger, NotYours, hash_token

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
MAX_UPLOAD = 8 * 1024 * 1024
"""Uploads above this many bytes are refused (413)."""
COOKIE = "datarights_session"


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def create_app(ledger: str | Path, process_options: dict | None = None, max_upload: int = MAX_UPLOAD) -> FastAPI:
    """The app for one ledger. `process_options` are passed to `Ledger.process` by the admin's button."""
    led = Ledger(ledger)
    app = FastAPI(title="datarights", description="Works, opt-outs, erase certificates and earnings of the owners "
                                                  "whose images trained a model.")
    secret = secrets.token_bytes(32)
    worker: dict = {"thread": None, "error": None}
    opts = dict(process_options or {})

    # ------------------------------------------------------------------ identity
    def _sign(value: str) -> str:
        return hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()

    def _session(request: Request) -> dict | None:
        raw = request.cookies.get(COOKIE, "")
        value, _, mac = raw.rpartition(".")
        if not value or not hmac.compare_digest(_sign(value), mac):
            return None
        oid, role, bound, name = value.split("|", 3)
        current = led.token_hash_of(int(oid))
        if current is None or not hmac.compare_digest(bound, _bind(current)):
            return None  # the token this session was opened with has been reissued (or the owner is gone)
        return {"id": int(oid), "role": role, "name": name, "csrf": _sign("csrf:" + raw)}

    def _bind(token_hash: str) -> str:
        return _sign("token:" + token_hash)[:16]

    def user(request: Request, admin: bool = False) -> dict:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            try:
                who = led.owner_by_token(auth[7:].strip())
            except DatarightsError:
                raise HTTPError(401, "unknown token") from None
        else:
            who = _session(request)
            if who is None:
                raise HTTPError(401, "sign in with your token first")
        if admin and who["role"] != "admin":
            raise HTTPError(403, "this page is for the model owner (admin) only")
        return who

    async def form_of(request: Request, who: dict) -> dict:
        form = await request.form()
        if "authorization" not in request.headers and not hmac.compare_digest(str(form.get("csrf", "")),
                                                                              who.get("csrf", "")):
            raise HTTPError(403, "the form's CSRF token is missing or wrong; reload the page and try again")
        return form

    async def upload(file: UploadFile) -> Path:
        data = await file.read(max_upload + 1)
        if len(data) > max_upload:
            raise HTTPError(413, f"the upload is larger than {max_upload // (1024 * 1024)} MB")
        if not data:
            raise HTTPError(400, "the upload is empty")
        fd, name = tempfile.mkstemp(prefix="datarights-upload-", suffix=".img")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return Path(name)

    def page(request: Request, name: str, who: dict | None, http_status: int = 200, **ctx) -> HTMLResponse:
        return TEMPLATES.TemplateResponse(request, name, {"who": who, **ctx}, status_code=http_status)

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, e: HTTPError):
        if wants_json(request):
            return JSONResponse({"error": e.message}, status_code=e.status)
        return page(request, "error.html", _session(request), e.status, message=e.message, status=e.status)

    @app.exception_handler(NotYours)
    async def _not_yours(request: Request, e: NotYours):
        return await _http_error(request, HTTPError(404, "not found"))

    @app.exception_handler(RequestValidationError)
    async def _malformed(request: Request, e: RequestValidationError):
        where = "; ".join(f"{'.'.join(str(x) for x in err.get('loc', ()))}: {err.get('msg')}" for err in e.errors()[:3])
        return await _http_error(request, HTTPError(400, f"malformed request ({where})"))

    @app.exception_handler(DatarightsError)
    async def _bad_input(request: Request, e: DatarightsError):
        return await _http_error(request, HTTPError(400, str(e)))

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
        await form_of(request, user(request))
        resp = RedirectResponse("/", status_code=303)
        resp.delete_cookie(COOKIE)
        return resp

    # ------------------------------------------------------------------ an owner's pages
    @app.get("/works", response_class=HTMLResponse)
    def works_page(request: Request, page_no: int = 0):
        who = user(request)
        works = led.works(who["name"], limit=100, offset=100 * max(page_no, 0))
        for w in works:
            w["thumb"] = thumb(led.work_file(w["id"]))
        return page(request, "works.html", who, works=works, page_no=page_no,
                    total=next(o["works"] for o in led.owners() if o["name"] == who["name"]))

    @app.get("/check", response_class=HTMLResponse)
    def check_form(request: Request):
        return page(request, "check.html", user(request), matches=None)

    @app.post("/check", response_class=HTMLResponse)
    async def check(request: Request):
        who = user(request)
        form = await form_of(request, who)
        path = await upload(_file(form))
        try:
            matches = led.lookup(path)
            for m in matches:
                m["thumb"] = thumb(led.work_file(m["work_id"]))
            return page(request, "check.html", who, matches=matches, uploaded=thumb(path))
        finally:
            path.unlink(missing_ok=True)

    @app.get("/optouts", response_class=HTMLResponse)
    def optouts_page(request: Request):
        who = user(request)
        return page(request, "optouts.html", who, optouts=led.optouts(who["name"]))

    @app.post("/optouts")
    async def optout_form(request: Request):
        who = user(request)
        form = await form_of(request, who)
        works = [int(x) for x in form.getlist("works") if str(x).strip()]
        concept = str(form.get("concept", "")).strip() or None
        r = led.optout(who["name"], works=works or None, concept=concept if not works else None,
                       anchor=str(form.get("anchor", "")).strip() or None)
        return RedirectResponse(f"/optouts/{r['id']}", status_code=303)

    @app.get("/optouts/{request_id}", response_class=HTMLResponse)
    def optout_page(request: Request, request_id: int):
        who = user(request)
        owner = None if who["role"] == "admin" else who["name"]
        return page(request, "optout.html", who, r=led.optout_status(request_id, owner))

    @app.get("/certificates/{cert_id}.json")
    def certificate_file(request: Request, cert_id: int):
        who = user(request)
        cert = led.certificate(cert_id, None if who["role"] == "admin" else who["name"])
        return JSONResponse(cert, headers={"content-disposition": f'attachment; filename="certificate-{cert_id}.json"'})

    @app.get("/certificates/{cert_id}", response_class=HTMLResponse)
    def certificate_page(request: Request, cert_id: int):
        from ..ledger.certificate import verify_certificate

        who = user(request)
        cert = led.certificate(cert_id, None if who["role"] == "admin" else who["name"])
        doc = cert["document"]
        return page(request, "certificate.html", who, cert_id=cert_id, doc=doc, cert=cert,
                    check=verify_certificate(cert, public_key=led.public_key()),
                    evidence=led.evidence(doc["job"]))

    @app.get("/statements", response_class=HTMLResponse)
    def statements_page(request: Request, period: str | None = None):
        who = user(request)
        months = led.earnings(who["name"])
        period = period or (months[-1]["period"] if months else _this_month())
        return page(request, "statements.html", who, months=months, chart=bar_chart(months),
                    st=led.statement(who["name"], period))

    # ------------------------------------------------------------------ the model owner's pages
    def admin_view(request: Request, who: dict, attributed: dict | None = None) -> HTMLResponse:
        return page(request, "admin.html", who, pending=led.optouts(status="pending"), jobs=led.jobs()[:20],
                    running=_running(), error=worker["error"], attributed=attributed)

    @app.get("/admin", response_class=HTMLResponse)
    def admin_page(request: Request):
        return admin_view(request, user(request, admin=True))

    @app.post("/admin/process")
    async def admin_process(request: Request):
        await form_of(request, user(request, admin=True))
        start_processing()
        return RedirectResponse("/admin", status_code=303)

    @app.post("/admin/attribute", response_class=HTMLResponse)
    async def admin_attribute(request: Request):
        who = user(request, admin=True)
        form = await form_of(request, who)
        path = await upload(_file(form))
        try:
            ev = led.attribute_log(path, str(form.get("prompt", "")), str(form.get("revenue", "")),
                                   str(form.get("method", "dtrak")) or "dtrak")
        finally:
            path.unlink(missing_ok=True)
        return admin_view(request, who, ev)

    def _running() -> bool:
        t = worker["thread"]
        return t is not None and t.is_alive()

    def start_processing() -> bool:
        if _running():
            return False

        def work():
            worker["error"] = None
            try:
                led.process(**opts)
            except Exception as e:  # recorded on the job rows too; shown on the admin page
                worker["error"] = str(e)
        worker["thread"] = threading.Thread(target=work, name="datarights-process", daemon=True)
        worker["thread"].start()
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

    @app.post("/api/lookup")
    async def api_lookup(request: Request, file: UploadFile = File(...)):
        user(request)
        path = await upload(file)
        try:
            return {"matches": led.lookup(path)}
        finally:
            path.unlink(missing_ok=True)

    @app.get("/api/optouts")
    def api_optouts(request: Request):
        return {"optouts": led.optouts(user(request)["name"])}

    @app.post("/api/optouts", status_code=201)
    async def api_optout(request: Request):
        who = user(request)
        body = await _json(request)
        return led.optout(who["name"], works=body.get("works"), concept=body.get("concept"),
                          anchor=body.get("anchor"), model_id=body.get("model_id"))

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
        return {"jobs": led.jobs(), "running": _running(), "error": worker["error"]}

    @app.get("/api/admin/jobs/{job_id}")
    def api_admin_job(request: Request, job_id: int):
        user(request, admin=True)
        return led.job(job_id)

    @app.post("/api/admin/attribute", status_code=201)
    async def api_admin_attribute(request: Request, file: UploadFile = File(...), prompt: str = Form(...),
                                  revenue: str = Form(...), method: str = Form("dtrak")):
        user(request, admin=True)
        path = await upload(file)
        try:
            return led.attribute_log(path, prompt, revenue, method)
        finally:
            path.unlink(missing_ok=True)

    app.state.ledger = led
    app.state.start_processing = start_processing
    app.state.worker = worker
    return app


def _file(form) -> UploadFile:
    f = form.get("file")
    if f is None or not hasattr(f, "read"):
        raise HTTPError(400, "choose an image file to upload")
    return f


async def _json(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise HTTPError(400, "the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "the request body must be a JSON object")
    return body


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
        bars.append(f'<rect x="{x:.1f}" y="{height - 20 - h:.1f}" width="{bw - 8:.1f}" height="{h:.1f}" fill="#4f7cff">'
                    f'<title>{m["period"]}: {m["cents"] / 100:.2f}</title></rect>'
                    f'<text x="{x + (bw - 8) / 2:.1f}" y="{height - 5}" font-size="11" text-anchor="middle">{m["period"]}</text>'
                    f'<text x="{x + (bw - 8) / 2:.1f}" y="{height - 24 - h:.1f}" font-size="11" text-anchor="middle">'
                    f'{m["cents"] / 100:.2f}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="earnings per month">{"".join(bars)}</svg>')


