"""Drives Debian's chromium (through chromedriver, both given by path: nothing is downloaded)
over driftd's on-call page, for tests/it/ui_e2e.rs: reads what the page shows, releases with a
wrong token then the right one, takes screenshots, and prints one JSON object of what it saw.
The Rust test asserts; this script only reports (it fails only when the browser cannot)."""

import json
import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

base, deployment, wrong, right, shots, chromium, driver_path = sys.argv[1:8]

opts = webdriver.ChromeOptions()
opts.binary_location = chromium
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--disable-extensions", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--window-size=1200,1600"):
    opts.add_argument(arg)
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
browser = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
out = {"screenshots": [], "resources": [], "console": []}


def shot(name):
    path = os.path.join(shots, name)
    browser.save_screenshot(path)
    out["screenshots"].append(path)


def resources():
    out["resources"] += browser.execute_script(
        "return performance.getEntriesByType('navigation').concat("
        "performance.getEntriesByType('resource')).map(e => e.name)")
    out["console"] += [e["message"] for e in browser.get_log("browser")]


def number(text):
    """A chart's number; NaN (absent) as None, which JSON can carry."""
    value = float(text)
    return None if value != value else value


def result_after(action):
    """Waits for the form's answer after `action` sent it."""
    action()
    el = browser.find_element(By.ID, "result")
    WebDriverWait(browser, 10).until(
        lambda b: el.get_attribute("data-kind") in ("ok", "error"))
    return {"kind": el.get_attribute("data-kind"), "text": el.text}


try:
    browser.get(base + "/")
    out["origin"] = browser.execute_script("return location.origin")
    out["overview"] = [
        {
            "deployment": row.get_attribute("data-deployment"),
            "phase": row.get_attribute("data-phase"),
            "phase_text": row.find_element(By.CSS_SELECTOR, "td[data-label=Phase]").text,
            "metrics": {m.get_attribute("data-metric"): m.text
                        for m in row.find_elements(By.CSS_SELECTOR, "li.metric")},
        }
        for row in browser.find_elements(By.CSS_SELECTOR, "tr.deployment")
    ]
    shot("overview.png")
    resources()
    browser.set_window_size(390, 1400)
    shot("overview-phone.png")
    out["phone_labels"] = browser.execute_script(
        "return getComputedStyle(document.querySelector('td[data-label=Phase]'),'::before')"
        ".content")
    browser.set_window_size(1200, 1600)

    browser.find_element(By.LINK_TEXT, deployment).click()
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.ID, "phase"))
    out["url"] = browser.current_url
    out["phase"] = browser.find_element(By.ID, "phase").text
    out["gate"] = browser.find_element(By.ID, "gate").text
    out["metrics"] = {s.get_attribute("data-metric"): s.get_attribute("data-state")
                      for s in browser.find_elements(By.CSS_SELECTOR, "section.metric")}
    crossings = []
    for section in browser.find_elements(By.CSS_SELECTOR, "section.metric"):
        frame = section.find_elements(By.CSS_SELECTOR, "svg.chart rect.frame")
        for c in section.find_elements(By.CSS_SELECTOR, "svg.chart line.crossing"):
            crossings.append({
                "metric": section.get_attribute("data-metric"),
                "source": c.get_attribute("data-source"),
                "state": c.get_attribute("data-state"),
                "t": c.get_attribute("data-t"),
                "estimate": number(c.get_attribute("data-estimate")),
                "ci_low": number(c.get_attribute("data-ci-low")),
                "x": float(c.get_attribute("x1")),
                "plot_left": float(frame[0].get_attribute("x")),
                "plot_right": float(frame[0].get_attribute("x"))
                + float(frame[0].get_attribute("width")),
                "displayed": c.is_displayed(),
            })
    out["crossings"] = crossings
    out["timeline"] = [{"event": li.get_attribute("data-event"), "text": li.text}
                       for li in browser.find_elements(By.CSS_SELECTOR, "ol.timeline li")]
    cmd = browser.find_elements(By.CSS_SELECTOR, "#release-command code")
    out["release_command"] = cmd[0].text if cmd else None
    shot("deployment.png")
    resources()

    browser.find_element(By.ID, "token").send_keys(wrong)
    browser.find_element(By.ID, "operator").send_keys("oncall")
    browser.find_element(By.ID, "reason").send_keys("checked the evidence on the page")
    out["wrong"] = result_after(lambda: browser.find_element(By.ID, "release").click())
    shot("release-refused.png")

    token = browser.find_element(By.ID, "token")
    token.clear()
    token.send_keys(right)
    browser.find_element(By.ID, "reason").click()
    # By keyboard: from the reason field, Tab reaches the Release button and Enter presses it.
    out["right"] = result_after(lambda: browser.switch_to.active_element.send_keys(Keys.TAB, Keys.ENTER))
    out["focused_by_keyboard"] = browser.switch_to.active_element.get_attribute("id")
    shot("release-accepted.png")
    resources()
    out["stored"] = browser.execute_script(
        "return [document.cookie, localStorage.length, sessionStorage.length]")
finally:
    browser.quit()
print(json.dumps(out))
