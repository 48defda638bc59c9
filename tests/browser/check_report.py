#!/usr/bin/env python3
"""Opens a run's report page in headless Chromium and checks that it renders as people see it:
the charts are drawn (SVG elements with marks and a size), the console stays free of errors,
and the page requests nothing beyond itself. Saves a full-page screenshot.

    python3 tests/browser/check_report.py REPORT.html SCREENSHOT.png

Talks to Chromium over the DevTools protocol on a loopback port (pip: websocket-client).
Exits 1 naming every problem found.
"""

import base64
import json
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from websocket import create_connection


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("no Chromium found: apt-get install chromium")


class DevTools:
    def __init__(self, url):
        # No Origin header: DevTools accepts a client that is not a web page.
        self.ws = create_connection(url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events = []

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method, seconds=30):
        deadline = time.time() + seconds
        while time.time() < deadline:
            if any(e.get("method") == method for e in self.events):
                return
            self.events.append(json.loads(self.ws.recv()))
        raise RuntimeError(f"no {method} within {seconds} s")


def main():
    page = pathlib.Path(sys.argv[1]).resolve()
    shot = pathlib.Path(sys.argv[2])
    port = free_port()
    profile = tempfile.mkdtemp()
    browser = subprocess.Popen(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
         f"--user-data-dir={profile}", "--window-size=1100,1200", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        targets = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json") as r:
                    targets = [t for t in json.load(r) if t.get("type") == "page"]
                if targets:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        if not targets:
            sys.exit("Chromium did not open its DevTools port")
        tools = DevTools(targets[0]["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Network", "Log"):
            tools.call(f"{domain}.enable")
        tools.call("Page.navigate", url=page.as_uri())
        tools.wait_for("Page.loadEventFired")
        time.sleep(0.3)
        shape = tools.call("Runtime.evaluate", returnByValue=True, expression="""({
            svgs: document.querySelectorAll('svg').length,
            marks: document.querySelectorAll('svg rect, svg polyline').length,
            drawn: [...document.querySelectorAll('svg')].every(s => s.getBoundingClientRect().width > 300),
            sections: [...document.querySelectorAll('h2')].map(h => h.textContent),
            height: document.documentElement.scrollHeight
        })""")["result"]["value"]
        tools.call("Emulation.setDeviceMetricsOverride", width=1100, height=shape["height"],
                   deviceScaleFactor=1, mobile=False)
        png = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        shot.parent.mkdir(parents=True, exist_ok=True)
        shot.write_bytes(base64.b64decode(png["data"]))

        problems = []
        if shape["svgs"] < 3 or shape["marks"] < 5 or not shape["drawn"]:
            problems.append(f"the charts did not render: {shape}")
        for wanted in ("Summary", "Shards over time", "Where the time went", "Record accounting"):
            if wanted not in shape["sections"]:
                problems.append(f"no section {wanted!r}: {shape['sections']}")
        for event in tools.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Network.requestWillBeSent":
                url = params["request"]["url"]
                if url != page.as_uri() and not url.startswith("data:"):
                    problems.append(f"requested {url}")
            elif method == "Runtime.exceptionThrown":
                problems.append(f"exception: {params['exceptionDetails'].get('text')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                problems.append(f"console error: {params.get('args')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                problems.append(f"console error: {params['entry'].get('text')}")
        if problems:
            print("\n".join(problems), file=sys.stderr)
            sys.exit(1)
        print(f"{page}: {shape['svgs']} charts, {shape['marks']} marks, no console errors, "
              f"no requests; screenshot {shot}")
    finally:
        browser.terminate()
        browser.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
