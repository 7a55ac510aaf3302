"""The web console's server side, in-process (no browser): sign-in and its session, CSRF on every
state-changing route, the security headers, escaping, tenant scoping, and the pages' round trips
through the public API. The browser test is test_console_browser.py."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from nexa_gateway.db import ConsoleSession
from tests.integration.gateway_app import Gateway

pytestmark = pytest.mark.integration

XSS = "<script>alert(1)</script>"


def _signin(gw: Gateway, key: str | None = None) -> str:
    r = gw.client.post("/console/signin", data={"api_key": key or gw.key}, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/console/jobs"
    cookie = r.headers["set-cookie"].split(";", 1)[0].removeprefix("nexa_session=")
    assert cookie
    _use_cookie(gw, cookie)
    return cookie


def _use_cookie(gw: Gateway, value: str) -> None:
    """Make ``value`` the one nexa_session cookie the client sends (as a browser, or an attacker, would)."""
    gw.client.cookies.clear()
    gw.client.cookies.set("nexa_session", value)


def _csrf(gw: Gateway) -> str:
    page = gw.client.get("/console/keys").text
    marker = '<meta name="csrf-token" content="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


def _rows(gw: Gateway) -> list[tuple[str, str]]:
    """(id_hash, api_key_encrypted) of every console session row."""
    with gw.client.app.state.nexa.db.read() as session:  # type: ignore[attr-defined]
        return [(r.id_hash, r.api_key_encrypted) for r in session.scalars(select(ConsoleSession))]


def test_front_door_and_pages_ask_for_a_sign_in(sqlite_gateway: Gateway) -> None:
    gw = sqlite_gateway
    assert gw.client.get("/", follow_redirects=False).headers["location"] == "/console/signin"
    for path in ("/console/jobs", "/console/jobs/job_x", "/console/submit/audit", "/console/keys"):
        r = gw.client.get(path, follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (303, "/console/signin"), path
    assert gw.client.get("/console/api/jobs").status_code == 401
    assert "/console" not in str(gw.client.get("/openapi.json").json()["paths"])


def test_signin_sets_an_httponly_strict_cookie_and_keeps_the_key_server_side(sqlite_gateway: Gateway) -> None:
    gw = sqlite_gateway
    r = gw.client.post("/console/signin", data={"api_key": gw.key}, follow_redirects=False)
    assert r.status_code == 303
    set_cookie = r.headers["set-cookie"]
    assert set_cookie.startswith("nexa_session=")
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie and "Path=/" in set_cookie
    assert "Secure" not in set_cookie  # plain http here; https requests get Secure
    cookie = set_cookie.split(";", 1)[0].removeprefix("nexa_session=")
    assert gw.key not in set_cookie
    ((id_hash, sealed),) = _rows(gw)
    assert id_hash != cookie and cookie not in id_hash
    assert gw.key not in sealed  # stored encrypted with a key only the cookie gives
    assert gw.client.get("/", follow_redirects=False).headers["location"] == "/console/jobs"
    page = gw.client.get("/console/jobs")
    assert page.status_code == 200 and "No jobs" in page.text
    assert gw.key not in page.text


def test_a_wrong_key_is_refused_with_the_apis_message(sqlite_gateway: Gateway) -> None:
    gw = sqlite_gateway
    r = gw.client.post("/console/signin", data={"api_key": "nexa_not-a-real-key"}, follow_redirects=False)
    assert r.status_code == 401
    assert 'id="signin-error"' in r.text
    assert "nexa_session" not in r.headers.get("set-cookie", "")
    assert _rows(gw) == []
    assert gw.client.post("/console/signin", data={"api_key": ""}).status_code == 400


def test_a_cross_origin_signin_is_refused(sqlite_gateway: Gateway) -> None:
    r = sqlite_gateway.client.post(
        "/console/signin", data={"api_key": sqlite_gateway.key}, headers={"Origin": "https://evil.example"}
    )
    assert r.status_code == 403
    assert _rows(sqlite_gateway) == []


def test_no_session_fixation(sqlite_gateway: Gateway) -> None:
    gw = sqlite_gateway
    _use_cookie(gw, "chosen-by-an-attacker")
    assert gw.client.get("/console/jobs", follow_redirects=False).status_code == 303  # not a session
    first = _signin(gw)
    assert first != "chosen-by-an-attacker"
    second = _signin(gw)  # signing in again, with the first cookie sent: a new id, the old one gone
    assert second != first
    assert len(_rows(gw)) == 1
    _use_cookie(gw, first)
    assert gw.client.get("/console/jobs", follow_redirects=False).status_code == 303


def test_signout_deletes_the_session(sqlite_gateway: Gateway) -> None:
    gw = sqlite_gateway
    cookie = _signin(gw)
    r = gw.client.post("/console/signout", data={"csrf_token": _csrf(gw)}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/console/signin")
    assert _rows(gw) == []
    _use_cookie(gw, cookie)  # a copy of the old cookie is worthless
    assert gw.client.get("/console/jobs", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["missing", "wrong"])
def test_every_state_changing_route_needs_the_csrf_token(sqlite_gateway: Gateway, token: str | None) -> None:
    gw = sqlite_gateway
    job = gw.submit_audit()
    other = gw.client.post("/v1/keys", json={"name": "other"}, headers=gw.auth()).json()
    _signin(gw)
    extra = {} if token is None else {"csrf_token": token}
    routes = {
        "/console/signout": {},
        f"/console/jobs/{job['job_id']}/cancel": {},
        "/console/submit/audit": {"dataset_uri": str(gw.dataset_file())},
        "/console/keys": {"name": "sneaky"},
        f"/console/keys/{other['key_id']}/revoke": {},
    }
    for path, form in routes.items():
        r = gw.client.post(path, data={**form, **extra}, follow_redirects=False)
        assert r.status_code == 403, (path, r.status_code)
        assert "security token" in r.text
    # Nothing happened: the job runs on, no key was made or revoked, the session is still there.
    assert gw.client.get(f"/v1/jobs/{job['job_id']}", headers=gw.auth()).json()["status"] != "cancelled"
    keys = gw.client.get("/v1/keys", headers=gw.auth()).json()
    assert sorted(k["name"] for k in keys) == ["bootstrap", "other"]
    assert all(k["revoked_at"] is None for k in keys)
    assert len(_rows(gw)) == 1
    # A JSON header token is checked the same way.
    r = gw.client.post(
        f"/console/jobs/{job['job_id']}/cancel", headers={"X-CSRF-Token": "nope"}, follow_redirects=False
    )
    assert r.status_code == 403


def test_security_headers_on_every_kind_of_answer(sqlite_gateway: Gateway) -> None:
    gw = sqlite_gateway
    _signin(gw)
    for path in (
        "/console/signin",
        "/console/jobs",
        "/console/api/jobs",
        "/console/static/console.js",
        "/console/static/console.css",
        "/console/jobs/job_missing",
    ):
        h = gw.client.get(path).headers
        csp = h["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp
        assert h["x-frame-options"] == "DENY", path
        assert h["x-content-type-options"] == "nosniff", path
        assert h["referrer-policy"] == "same-origin", path
    assert gw.client.get("/console/static/../settings.py").status_code == 404
    assert gw.client.get("/console/static/nope.js").status_code == 404
    page = gw.client.get("/console/jobs").text
    assert "<script>" not in page and '<script src="/console/static/console.js" defer></script>' in page


def test_user_text_is_escaped(sqlite_gateway: Gateway) -> None:
    gw = sqlite_gateway
    job = gw.submit_audit(metadata={"note": XSS}, labels={"team": "data"}, text_columns=[XSS])
    _signin(gw)
    listed = gw.client.get("/console/jobs", params={"label": XSS})  # the filter is echoed back
    assert listed.status_code == 200
    assert XSS not in listed.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in listed.text
    page = gw.client.get(f"/console/jobs/{job['job_id']}").text
    assert XSS not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_another_tenants_job_is_not_found(sqlite_gateway: Gateway) -> None:
    gw = sqlite_gateway
    theirs = gw.submit_audit()
    _signin(gw, gw.new_tenant_key("other-tenant"))
    r = gw.client.get(f"/console/jobs/{theirs['job_id']}")
    assert r.status_code == 404
    assert f"job {theirs['job_id']!r} not found".replace("'", "&#39;") in r.text
    assert gw.client.get(f"/console/api/jobs/{theirs['job_id']}").status_code == 404
    csrf = _csrf(gw)
    r = gw.client.post(f"/console/jobs/{theirs['job_id']}/cancel", data={"csrf_token": csrf})
    assert r.status_code == 404


def test_submit_an_audit_from_the_form_then_cancel_it(sqlite_gateway: Gateway) -> None:
    gw = sqlite_gateway
    ds = gw.client.post(
        "/v1/datasets",
        files={"file": ("rows.jsonl", gw.dataset_file().read_bytes())},
        headers=gw.auth(),
    )
    assert ds.status_code == 201, ds.text
    _signin(gw)
    form = gw.client.get("/console/submit/audit").text
    assert 'list="datasets"' in form and ds.json()["dataset_id"] in form  # the dataset picker
    assert 'name="ngram"' in form and 'name="resources.cpu"' in form and 'name="labels"' in form
    csrf = _csrf(gw)
    bad = gw.client.post(
        "/console/submit/audit",
        data={"csrf_token": csrf, "dataset_uri": ds.json()["dataset_id"], "ngram": "many"},
    )
    assert bad.status_code == 422 and 'id="api-error"' in bad.text and "ngram" in bad.text
    assert 'value="many"' in bad.text  # what was typed stays in the form
    r = gw.client.post(
        "/console/submit/audit",
        data={
            "csrf_token": csrf,
            "dataset_uri": ds.json()["dataset_id"],
            "ngram": "3",
            "labels": "team=console",
            "text_columns": "text",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    job_id = r.headers["location"].rsplit("/", 1)[1]
    job = gw.client.get(f"/v1/jobs/{job_id}", headers=gw.auth()).json()
    assert job["spec"]["ngram"] == 3 and job["spec"]["text_columns"] == ["text"]
    assert job["labels"] == {"team": "console"} and job["spec"].get("judge") is None
    listed = gw.client.get("/console/api/jobs", params={"label": "team=console"}).json()
    assert [j["job_id"] for j in listed["items"]] == [job_id]
    page = gw.client.get(f"/console/jobs/{job_id}")
    assert page.status_code == 200 and 'id="cancel"' in page.text
    r = gw.client.post(f"/console/jobs/{job_id}/cancel", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert gw.client.get(f"/console/api/jobs/{job_id}").json()["status"] == "cancelled"
    # The log stream of an ended job: its lines, then the API's end event.
    with gw.client.stream("GET", f"/console/api/jobs/{job_id}/logs") as stream:
        body = "".join(stream.iter_text())
    assert "event: end" in body and "cancelled" in body


def test_keys_create_shows_the_secret_once_then_revoke(sqlite_gateway: Gateway) -> None:
    gw = sqlite_gateway
    _signin(gw)
    csrf = _csrf(gw)
    r = gw.client.post("/console/keys", data={"csrf_token": csrf, "name": "ci", "role": "member"})
    assert r.status_code == 201
    created = [k for k in gw.client.get("/v1/keys", headers=gw.auth()).json() if k["name"] == "ci"][0]
    start = r.text.index('id="new-secret">') + len('id="new-secret">')
    secret = r.text[start : r.text.index("<", start)]
    assert secret.startswith("nexa_")
    assert gw.client.get("/v1/keys/self", headers=gw.auth(secret)).status_code == 200
    listing = gw.client.get("/console/keys").text
    assert secret not in listing and created["key_id"] in listing
    bad = gw.client.post("/console/keys", data={"csrf_token": csrf, "name": "", "role": "member"})
    assert bad.status_code == 422 and 'id="api-error"' in bad.text
    r = gw.client.post(
        f"/console/keys/{created['key_id']}/revoke", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert (r.status_code, r.headers["location"]) == (303, "/console/keys")
    assert gw.client.get("/v1/keys/self", headers=gw.auth(secret)).status_code == 401
    assert "revoked" in gw.client.get("/console/keys").text


def test_a_session_whose_key_was_revoked_signs_out(sqlite_gateway: Gateway) -> None:
    gw = sqlite_gateway
    made = gw.client.post("/v1/keys", json={"name": "short-lived"}, headers=gw.auth()).json()
    _signin(gw, made["key"])
    assert gw.client.get("/console/jobs").status_code == 200
    gw.client.delete(f"/v1/keys/{made['key_id']}", headers=gw.auth())
    gw.client.app.state.nexa.keys.forget_all()  # type: ignore[attr-defined]
    r = gw.client.get("/console/jobs", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/console/signin")
    assert _rows(gw) == []
