"""The Prefect UI in a real browser: headless Chromium (Debian's package; .ci/run installs it)
opens the `train-tabular` deployment's page on a server started by `trustflow server up`, finds
its weekly schedule, and saves a screenshot to test-artifacts/prefect-ui-deployments.png.
Chromium is driven over the DevTools protocol with the websockets client Prefect already uses."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import BIN, clean_env, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = REPO / "test-artifacts" / "prefect-ui-deployments.png"


async def _page_text_and_screenshot(debug_port: int, url: str, wanted: list[str]) -> str:
    import websockets

    target = httpx.put(f"http://127.0.0.1:{debug_port}/json/new?{url}", timeout=10).json()
    async with websockets.connect(target["webSocketDebuggerUrl"], max_size=50_000_000) as ws:
        ids = iter(range(1, 1_000_000))

        async def call(method: str, **params: object) -> dict:
            message_id = next(ids)
            await ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
            while True:
                reply = json.loads(await ws.recv())
                if reply.get("id") == message_id:
                    return dict(reply.get("result", {}))

        text = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            result = await call(
                "Runtime.evaluate", expression="document.body.innerText", returnByValue=True
            )
            text = str(result.get("result", {}).get("value", ""))
            if all(word in text for word in wanted):
                break
            await asyncio.sleep(0.5)
        shot = await call("Page.captureScreenshot", format="png")
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(base64.b64decode(shot["data"]))
        return text


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (.ci/run installs Debian's)")
def test_the_ui_lists_the_deployment_with_its_schedule(tmp_path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    prefect_port = free_port()
    command = [str(BIN / "trustflow"), "server"]
    up = subprocess.run(
        [*command, "up", "--workspace", str(ws), "--prefect-port", str(prefect_port),
         "--mlflow-port", str(free_port())],
        capture_output=True, text=True, timeout=240, env=clean_env(),
    )  # fmt: skip
    browser = None
    try:
        assert up.returncode == 0, up.stderr
        ui = f"http://127.0.0.1:{prefect_port}"
        deploy = subprocess.run(
            [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], cwd=REPO,
            capture_output=True, text=True, timeout=240, env=clean_env(PREFECT_API_URL=f"{ui}/api"),
        )  # fmt: skip
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        debug_port = free_port()
        browser = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--window-size=1400,900", f"--remote-debugging-port={debug_port}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{debug_port}/json/version", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        deployment = httpx.get(
            f"{ui}/api/deployments/name/train-tabular/train-tabular", timeout=10
        ).json()
        page = f"{ui}/deployments/deployment/{deployment['id']}"
        text = asyncio.run(_page_text_and_screenshot(debug_port, page, ["train-tabular", "Monday"]))
        assert "train-tabular" in text, text[:2000]
        assert "Monday" in text or "0 3 * * 1" in text, text[:2000]  # the weekly schedule
        assert SCREENSHOT.stat().st_size > 10_000
    finally:
        if browser is not None:
            browser.terminate()
            browser.wait(timeout=30)
        subprocess.run([*command, "down", "--workspace", str(ws)], timeout=120, env=clean_env())
