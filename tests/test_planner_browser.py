"""The DF-XRM planner end to end in headless Chromium: the page served by
``xrd-bluesky planner`` (``streamlit run`` in headless mode), driven through its widgets by Selenium (energy, then
reflection); the 3D view is drawn (its WebGL canvas shows the coloured beams, lens and
stages) and the angles on the page are the library's for those inputs."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from xrd_bluesky.science.dfxrm.cif_structure import read_cif
from xrd_bluesky.science.dfxrm.orientation import orient
from xrd_bluesky.science.dfxrm.reflection_table import reflection_table

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Seconds to wait for the server, the first render and each rerender (hang guards: a
#: loaded machine starts Streamlit in tens of seconds).
SERVER_TIMEOUT_S, RENDER_TIMEOUT_S = 120, 45
ENERGY_KEV, HKL = 20.0, (3, 1, 1)

pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                reason="headless browser test: /usr/bin/chromium or /usr/bin/chromedriver absent "
                                       "(Debian packages chromium and chromium-driver)")


@pytest.fixture
def server_url():
    """``xrd-bluesky planner`` on a free loopback port; stopped (SIGTERM) afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "xrd_bluesky.cli.main", "planner", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as answer:
                if answer.read() == b"ok":
                    break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()  # its stderr ends only when it does
                raise RuntimeError(f"streamlit did not answer on {url} within {SERVER_TIMEOUT_S} s: "
                                   f"{process.communicate()[1].decode()}") from None
            time.sleep(0.2)
    try:
        yield url
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                     "--enable-unsafe-swiftshader"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def _angles_shown(driver) -> dict[str, str]:
    """omega, chi, phi (deg) as the page's metrics show them (text)."""
    shown = {}
    for metric in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]'):
        label, _, value = metric.text.partition("\n")
        if label.endswith("(deg)"):
            shown[label.split()[0]] = value
    return shown


def _idle(driver) -> bool:
    """True when the script has finished its run (no 'running' status widget)."""
    return not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')


def test_planner_in_a_browser(server_url, browser):
    wait = WebDriverWait(browser, RENDER_TIMEOUT_S)
    browser.get(server_url)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot") and _angles_shown(d))

    energy = browser.find_element(By.CSS_SELECTOR, 'input[aria-label="photon energy (keV)"]')
    energy.send_keys(Keys.CONTROL, "a")
    energy.send_keys(f"{ENERGY_KEV}", Keys.ENTER)
    wavelength = browser.find_element(By.CSS_SELECTOR, 'input[aria-label="wavelength (A)"]')
    wait.until(lambda d: wavelength.get_attribute("value") == "0.619921" and _idle(d))

    browser.find_element(By.CSS_SELECTOR, 'input[aria-label="reflection to orient"]').click()
    label = "({} {} {})".format(*HKL)
    wait.until(lambda d: [o for o in d.find_elements(By.CSS_SELECTOR, '[role="option"]') if o.text.startswith(label)])
    next(o for o in browser.find_elements(By.CSS_SELECTOR, '[role="option"]') if o.text.startswith(label)).click()
    wait.until(lambda d: f"for {label}" in d.find_element(By.TAG_NAME, "body").text and _idle(d))

    table = reflection_table(read_cif("Si"), ENERGY_KEV)
    angles = orient(table, HKL).angles
    expected = {"omega": angles.omega_deg, "chi": angles.chi_deg, "phi": angles.phi_deg}
    shown = _angles_shown(browser)
    assert {axis: float(value) for axis, value in shown.items()} == pytest.approx(expected, abs=5e-5), shown
    assert "energy_keV=20.0," in browser.find_element(By.TAG_NAME, "body").text

    canvas = browser.find_element(By.CSS_SELECTOR, ".js-plotly-plot .gl-container canvas")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", canvas)
    pixels = np.asarray(Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB")).astype(int)
    coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 80  # beams, lens, stages; not white or grey-blue planes
    assert coloured.mean() > 0.002, f"the WebGL canvas of the 3D view looks blank ({coloured.mean():.2%} coloured)"
