#!/usr/bin/env python3
"""The Tailplane console in a real browser: headless Chromium from Debian's packages, driven through
chromedriver with Selenium (Tests/Browser/requirements.txt).

Run by ConsoleBrowserTests against a policyd test stack with a simulated fleet. It signs in, looks at the
fleet, checks that an agent's HTML is shown as text and never runs, edits a rule with a typo and waits for
the diagnostic at the right line and column, fixes it, applies, watches the rollout reach 100 % without a
reload, rolls back from the versions page, and checks what a read-only token sees. Screenshots of every
page go to --screenshots. Exit status 0 when every check passed; otherwise the failing check is printed.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True, help="a write token")
    parser.add_argument("--read-token", required=True)
    parser.add_argument("--agents", type=int, required=True, help="agents the fleet page must show")
    parser.add_argument("--hostile-uid", required=True, help="an agent whose strings are HTML and script")
    parser.add_argument("--file", required=True, help="the policy file to edit")
    parser.add_argument("--trace-sample", required=True, help="an OTLP/JSON trace file for the estimate")
    parser.add_argument("--screenshots", required=True)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args()
    os.makedirs(args.screenshots, exist_ok=True)

    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    # A profile of its own, removed afterwards (left to itself Chromium leaves one in /tmp at every run).
    profile = tempfile.mkdtemp(prefix="tailplane-chromium-")
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1440,1000", "--hide-scrollbars", f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
    driver.set_page_load_timeout(30)
    # The rollout page refreshes itself: an element read between two refreshes is gone; read it again.
    wait = WebDriverWait(driver, 30, ignored_exceptions=[StaleElementReferenceException])
    step = "start"

    def shot(name):
        # The whole page, not just the window: tall pages (the diff, the rollout) are captured in full.
        height = driver.execute_script("return Math.max(document.body.scrollHeight, 1000)")
        driver.set_window_size(1440, min(height, 4000))
        driver.save_screenshot(os.path.join(args.screenshots, name + ".png"))
        driver.set_window_size(1440, 1000)

    def sign_in(token):
        driver.get(args.url + "/policies")
        wait.until(EC.url_contains("/login"))
        check("next=/policies" in driver.current_url, "the sign-in page keeps where you were going")
        field = driver.find_element(By.ID, "token")
        field.send_keys(token)
        field.submit()
        wait.until(EC.url_to_be(args.url + "/policies"))

    try:
        step = "sign in with a wrong token"
        driver.get(args.url + "/")
        wait.until(EC.presence_of_element_located((By.ID, "token")))
        shot("01-login")
        driver.find_element(By.ID, "token").send_keys("not-a-valid-token-000")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".error"), "That token is not valid."))
        check(driver.get_cookie("tailplane_session") is None, "a wrong token gets no session")

        step = "sign in"
        sign_in(args.token)
        cookie = driver.get_cookie("tailplane_session")
        check(cookie is not None and cookie.get("httpOnly") and cookie.get("sameSite") == "Strict",
              "the session cookie is HttpOnly and SameSite=Strict: %r" % cookie)
        check(driver.execute_script("return document.cookie").find("tailplane_session") < 0,
              "script cannot read the session cookie")

        step = "the fleet page"
        driver.get(args.url + "/")
        paging = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=paging]")))
        check(paging.text.endswith("of %d agents" % args.agents), "the fleet page lists every agent: " + paging.text)
        check(driver.find_element(By.CSS_SELECTOR, "[data-testid=converged]").text == "100 %",
              "every managed agent converged")
        shot("02-fleet")

        step = "an agent's HTML is text"
        for path in ["/", "/agents/" + args.hostile_uid]:
            driver.get(args.url + path)
            wait.until(EC.presence_of_element_located((By.TAG_NAME, "main")))
            check(driver.execute_script("return window.__xss === undefined"), path + ": the agent's script ran")
            check(not driver.find_elements(By.CSS_SELECTOR, "main img"), path + ": the agent's markup became an element")
            check("<script>window.__xss=1</script>" in driver.find_element(By.TAG_NAME, "main").text,
                  path + ": the agent's text is shown as text")
        shot("03-agent-with-html-in-its-description")

        step = "the policy editor shows a typo's diagnostic at its line and column"
        driver.get(args.url + "/policies")
        count = wait.until(EC.presence_of_element_located((By.ID, "diagnostic-count")))
        wait.until(lambda d: count.text == "no problems" or count.text.startswith("0 errors"))
        driver.find_element(By.CSS_SELECTOR, '[role=tab][data-file="%s"]' % args.file).click()
        source = driver.find_element(By.ID, "source")
        lines = driver.execute_script("return arguments[0].value.split('\\n').length", source)
        source.click()
        source.send_keys(Keys.CONTROL, Keys.END)
        typed = "keep console_slow when duraton > 9s"
        ends_with_newline = driver.execute_script("return arguments[0].value.endsWith('\\n')", source)
        if not ends_with_newline:
            source.send_keys(Keys.ENTER)
            lines += 1
        source.send_keys(typed)
        where = "%s:%d:%d" % (args.file, lines, len("keep console_slow when ") + 1)
        wait.until(lambda d: any(item.text.startswith(where) for item in d.find_elements(By.CSS_SELECTOR, "#diagnostics li.error")))
        marked = driver.find_elements(By.CSS_SELECTOR, "#gutter span.err")
        check([span.text for span in marked] == [str(lines)], "the gutter marks line %d: %r" % (lines, [s.text for s in marked]))
        check(count.text.startswith("1 error,"), "the count says there is one error: " + count.text)
        shot("04-policies-with-a-typo")
        # Clicking the diagnostic puts the cursor there.
        driver.find_element(By.CSS_SELECTOR, "#diagnostics li.error button").click()
        check(driver.find_element(By.ID, "cursor").text.endswith("line %d, column %d" % (lines, len("keep console_slow when ") + 1)),
              "the cursor moves to the diagnostic: " + driver.find_element(By.ID, "cursor").text)

        step = "fix the typo and apply"
        source.send_keys(Keys.CONTROL, Keys.END)
        source.send_keys(Keys.BACKSPACE * len(typed))
        source.send_keys("keep console_slow when duration > 9s")
        wait.until(lambda d: count.text == "no problems" or count.text.startswith("0 errors"))
        check(not driver.find_elements(By.CSS_SELECTOR, "#gutter span.err"), "no line is marked once fixed")
        step = "estimate the edit on a trace sample"
        driver.find_element(By.ID, "estimate-file").send_keys(os.path.abspath(args.trace_sample))
        driver.find_element(By.ID, "estimate-button").click()
        table = WebDriverWait(driver, 60, ignored_exceptions=[StaleElementReferenceException]).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#estimate-result table")))
        rows = {row.find_elements(By.TAG_NAME, "td")[0].text: row for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")}
        check("console_slow" in rows and rows["console_slow"].find_elements(By.TAG_NAME, "td")[6].text == "new rule",
              "the estimate lists the new rule: %r" % list(rows))
        check("errors" in rows, "the estimate lists the existing rules too")
        shot("05-estimate")

        step = "apply"
        driver.find_element(By.ID, "apply-message").send_keys("keep very slow requests (from the browser test)")
        driver.find_element(By.ID, "apply-button").click()
        wait.until(EC.url_contains("/rollout/"))

        step = "watch the rollout reach 100 % without a reload"
        driver.execute_script("window.__samePage = true")
        first = driver.find_element(By.CSS_SELECTOR, "[data-testid=percent]").text
        shot("06-rollout-in-progress")
        WebDriverWait(driver, 120, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda d: d.find_element(By.CSS_SELECTOR, "[data-testid=phase]").text == "succeeded")
        check(driver.find_element(By.CSS_SELECTOR, "[data-testid=percent]").text == "100 %", "the rollout reached 100 %")
        check(driver.execute_script("return window.__samePage === true"), "the page was not reloaded")
        check(first != "100 %", "the page opened before the rollout ended (it was %s), so it moved live" % first)
        shot("07-rollout-done")

        step = "versions and their differences"
        driver.get(args.url + "/versions")
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "tr[data-version='2']")))
        shot("08-versions")
        driver.get(args.url + "/versions/diff?from=1&to=2")
        added = driver.find_elements(By.CSS_SELECTOR, "tr.added td.r, tr.changed td.r")
        check(any("console_slow" in cell.text for cell in added), "the diff shows the added rule")
        shot("09-diff")

        step = "roll back from the versions page"
        driver.get(args.url + "/versions")
        button = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "tr[data-version='1'] button[data-post]")))
        check(button.text == "Roll back to v1", "the button says what it does: " + button.text)
        button.click()
        WebDriverWait(driver, 5).until(EC.alert_is_present()).accept()
        wait.until(EC.url_contains("/rollout/"))
        driver.execute_script("window.__samePage = true")
        WebDriverWait(driver, 120, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda d: d.find_element(By.CSS_SELECTOR, "[data-testid=phase]").text == "succeeded")
        check(driver.execute_script("return window.__samePage === true"), "the page was not reloaded")
        driver.get(args.url + "/")
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "p.big")))
        check(driver.find_element(By.CSS_SELECTOR, "p.big").text == "v1", "the fleet runs v1 again")

        step = "sign out, and a read token sees everything and can change nothing"
        driver.find_element(By.CSS_SELECTOR, "header form button").click()
        wait.until(EC.url_contains("/login"))
        sign_in(args.read_token)
        wait.until(EC.presence_of_element_located((By.ID, "source")))
        check(not driver.find_elements(By.ID, "apply-form"), "a read token gets no Apply form")
        check(driver.find_element(By.ID, "source").get_attribute("readonly") is not None, "the editor is read-only")
        driver.get(args.url + "/versions")
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "tr[data-version='1']")))
        check(not driver.find_elements(By.CSS_SELECTOR, "button[data-post]"), "a read token gets no rollback buttons")
        # Even a hand-made request with the page's own CSRF token is refused by the server.
        status = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch('/v1/rollback', {method: 'POST', credentials: 'same-origin',
                headers: {'Content-Type': 'application/json',
                          'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content},
                body: JSON.stringify({to: 2})}).then(r => done(r.status));
        """)
        check(status == 403, "the server refuses a read token's rollback: %r" % status)
        print("console browser test: every check passed")
        return 0
    except (CheckFailed, TimeoutException) as error:
        try:
            shot("failure")
        except Exception:
            pass
        print("console browser test failed at step '%s': %s" % (step, error or "timed out"), file=sys.stderr)
        print("page: %s" % driver.current_url, file=sys.stderr)
        return 1
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
