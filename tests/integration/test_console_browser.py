"""The web console in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium) against a real gateway process and worker: sign in, submit an audit from the form, watch it
complete live, read its log lines, see the list update live, create and revoke a key, and a planted
``<script>`` that never runs. Screenshots of each page go to the test's tmp dir, and to
``$NEXA_CONSOLE_SCREENSHOTS`` when set (docs/console/ holds the main ones).

Every wait polls the DOM against a generous deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest

from tests.fixtures.gateway_proc import GatewayFactory, GatewayProcess, WorkerFactory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (the dev extra has it)"
)
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "chromium or chromedriver is not installed (scripts/ensure_chromium.sh installs them; make test runs it)",
        allow_module_level=True,
    )

DEADLINE_S = 240.0
XSS_SCRIPT = "<script>alert('label')</script>"
XSS_IMG = "<img src=x onerror=alert('column')>"
T = TypeVar("T")


def _until(what: str, probe: Callable[[], T | None], deadline_s: float = DEADLINE_S) -> T:
    """Poll ``probe`` until it answers something truthy; fail naming ``what`` past the deadline."""
    deadline = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except Exception as exc:  # the DOM may be mid-update; the next poll sees it settled
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


class Shots:
    """Saves 1280×800 screenshots to the test's dir and to $NEXA_CONSOLE_SCREENSHOTS when set."""

    def __init__(self, driver: Any, tmp_path: Path) -> None:
        self.driver = driver
        self.dirs = [tmp_path / "screenshots"]
        if os.environ.get("NEXA_CONSOLE_SCREENSHOTS"):
            self.dirs.append(Path(os.environ["NEXA_CONSOLE_SCREENSHOTS"]))
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, *, publish: bool = True) -> None:
        """``publish=False``: the test's dir only (a page showing a secret never goes to the docs)."""
        png = self.driver.get_screenshot_as_png()
        for d in self.dirs if publish else self.dirs[:1]:
            (d / f"{name}.png").write_bytes(png)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,800",
        "--force-device-scale-factor=1",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    # The screenshots' size: a 1280×800 viewport whatever the headless window's frame takes.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        yield driver
    finally:
        driver.quit()


def _no_alert(driver: Any) -> None:
    try:
        text = driver.switch_to.alert.text
    except NoAlertPresentException:
        return
    raise AssertionError(f"a planted script ran: alert({text!r})")


def _upload(gw: GatewayProcess, tmp_path: Path) -> str:
    rows = tmp_path / "reviews.jsonl"
    rows.write_text(
        "".join(
            f'{{"text": "review {i % 30}: the product arrived and works as described {i % 7}"}}\n'
            for i in range(60)
        )
    )
    with rows.open("rb") as f:
        r = httpx.post(
            f"{gw.url}/v1/datasets", files={"file": ("reviews.jsonl", f)}, headers=gw.headers(), timeout=60
        )
    assert r.status_code == 201, r.text
    return str(r.json()["dataset_id"])


def _text(driver: Any, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def test_console_in_a_real_browser(
    gateway_factory: GatewayFactory, worker_factory: WorkerFactory, browser: Any, tmp_path: Path
) -> None:
    driver = browser
    shot = Shots(driver, tmp_path)
    gw = gateway_factory()
    worker_factory(gw)
    dataset_id = _upload(gw, tmp_path)

    # Sign in: a wrong key is refused with the API's message, the right one lands on the jobs page.
    driver.get(f"{gw.url}/")
    _until("the sign-in form", lambda: driver.find_element(By.ID, "api_key"))
    shot("signin")
    driver.find_element(By.ID, "api_key").send_keys("nexa_wrong")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _until("the refusal", lambda: driver.find_element(By.ID, "signin-error").text)
    driver.find_element(By.ID, "api_key").send_keys(gw.api_key)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _until("the empty jobs page", lambda: driver.find_element(By.ID, "jobs-empty").is_displayed())
    assert driver.get_cookie("nexa_session")["httpOnly"] is True
    assert driver.execute_script("return document.cookie") == ""  # nothing readable by scripts
    shot("jobs-empty")

    # Submit an audit from the generated form, with the dataset picker's id and a label.
    driver.find_element(By.LINK_TEXT, "Submit").click()
    field = _until("the audit form", lambda: driver.find_element(By.ID, "f-dataset_uri"))
    options = [o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#datasets option")]
    assert dataset_id in options
    field.send_keys(dataset_id)
    shot("submit")
    driver.find_element(By.CSS_SELECTOR, "details summary").click()
    driver.find_element(By.ID, "f-labels").send_keys("run=browser")
    driver.find_element(By.ID, "submit").click()

    # The job page: it completes live (no reload: the marker set on this page survives), logs stream in.
    _until("the job page", lambda: "/console/jobs/job_" in driver.current_url, deadline_s=60)
    job_id = driver.current_url.rsplit("/", 1)[1]
    driver.execute_script("window.__sameDocument = true;")
    _until("the job to complete live", lambda: _text(driver, "#job-status") == "completed")
    assert driver.execute_script("return window.__sameDocument === true;")
    _until("the result", lambda: "quality_tier" in _text(driver, "#job-result"))
    _until(
        "the end of the log stream",
        lambda: driver.find_element(By.ID, "logs-state").get_attribute("data-ended"),
    )
    lines = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#logs div")]
    assert lines, "no log lines were shown"
    assert (
        driver.find_elements(By.ID, "cancel-form") == []
        or not driver.find_element(By.ID, "cancel-form").is_displayed()
    )
    shot("job")

    # The list updates without a reload: a job submitted elsewhere appears, and completes.
    driver.get(f"{gw.url}/console/jobs")
    _until(
        "the first job listed", lambda: driver.find_elements(By.CSS_SELECTOR, f"tr[data-job-id='{job_id}']")
    )
    driver.execute_script("window.__sameDocument = true;")
    second = httpx.post(
        f"{gw.url}/v1/audit",
        json={"dataset_uri": dataset_id, "labels": {"run": "api"}},
        headers=gw.headers(),
        timeout=30,
    ).json()["job_id"]
    row = f"tr[data-job-id='{second}'] .status"
    _until("the new job to appear and complete", lambda: _text(driver, row) == "completed")
    assert driver.execute_script("return window.__sameDocument === true;")
    shot("jobs")
    metrics = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    # Phone width: nothing but the table (which scrolls in its own box) is wider than the screen.
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 390
    shot("jobs-phone")
    metrics = {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)

    # Keys: create one (its secret shown once, with a copy button), then revoke it.
    driver.find_element(By.LINK_TEXT, "Keys").click()
    _until("the keys page", lambda: driver.find_element(By.ID, "key-name"))
    driver.find_element(By.ID, "key-name").send_keys("browser-key")
    driver.find_element(By.CSS_SELECTOR, "#create-key button[type=submit]").click()
    secret = _until("the new secret", lambda: _text(driver, "#new-secret"))
    assert secret.startswith("nexa_")
    driver.find_element(By.CSS_SELECTOR, "button[data-copy]").click()
    _until("the copy button's answer", lambda: _text(driver, "button[data-copy]") != "Copy")
    shot("keys-created", publish=False)
    assert (
        httpx.get(f"{gw.url}/v1/keys/self", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    )
    key_row = _until(
        "the new key's row",
        lambda: [
            r for r in driver.find_elements(By.CSS_SELECTOR, "#keys tbody tr") if "browser-key" in r.text
        ],
    )[0]
    key_row.find_element(By.CSS_SELECTOR, "button.danger").click()
    _until(
        "the key shown revoked",
        lambda: any(
            "browser-key" in r.text and "revoked" in r.text
            for r in driver.find_elements(By.CSS_SELECTOR, "#keys tbody tr")
        ),
    )
    shot("keys")
    _until(
        "the key refused",
        lambda: (
            httpx.get(f"{gw.url}/v1/keys/self", headers={"Authorization": f"Bearer {secret}"}).status_code
            == 401
        ),
        deadline_s=30,
    )

    # XSS: markup in a label filter, metadata and a column name is shown as text and never runs.
    driver.get(f"{gw.url}/console/submit/audit")
    _until("the audit form", lambda: driver.find_element(By.ID, "f-dataset_uri")).send_keys(dataset_id)
    driver.find_element(By.CSS_SELECTOR, "details summary").click()
    driver.find_element(By.ID, "f-metadata").send_keys(f"note={XSS_SCRIPT}")
    driver.find_element(By.ID, "f-text_columns").send_keys(XSS_IMG)
    driver.find_element(By.ID, "submit").click()
    _until("the planted job's page", lambda: "/console/jobs/job_" in driver.current_url, deadline_s=60)
    _until("the planted job to end", lambda: _text(driver, "#job-status") in ("completed", "failed"))
    _until(
        "the log stream's end", lambda: driver.find_element(By.ID, "logs-state").get_attribute("data-ended")
    )
    _no_alert(driver)
    assert XSS_SCRIPT in _text(driver, "#job-metadata")
    assert XSS_IMG in _text(driver, "#job-spec")
    assert XSS_IMG in _text(driver, "#job-error")  # the engine's message names the column: as text
    assert driver.find_elements(By.CSS_SELECTOR, "main img, main script") == []
    shown = "\n".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, "#logs div"))
    assert XSS_IMG in shown
    shot("job-xss")
    driver.get(f"{gw.url}/console/jobs?label={quote(XSS_SCRIPT)}")
    _until("the filtered page", lambda: driver.find_element(By.ID, "filter-label"))
    _no_alert(driver)
    assert driver.find_element(By.ID, "filter-label").get_attribute("value") == XSS_SCRIPT

    # An unknown (or another tenant's) job id answers the API's "not found".
    driver.get(f"{gw.url}/console/jobs/job_00000000000000000000000000")
    assert "not found" in _until("the not-found page", lambda: _text(driver, "#api-error"))
    shot("not-found")

    # Sign out: back to the sign-in form, and the session is gone.
    driver.get(f"{gw.url}/console/jobs")
    _until("the jobs page", lambda: driver.find_element(By.CSS_SELECTOR, ".signout button")).click()
    _until("the sign-in form", lambda: driver.find_element(By.ID, "api_key"))
    driver.get(f"{gw.url}/console/jobs")
    _until("a redirect to sign-in", lambda: driver.current_url.endswith("/console/signin"))
