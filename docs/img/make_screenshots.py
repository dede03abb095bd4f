"""Retakes the screenshots of docs/operations.md: RabbitMQ's management UI showing m8.

Not part of m8 and not in its lock: it drives Debian's Chromium (`apt-get install -y
chromium`) with Playwright, installed in a throwaway virtual environment:

    python3 -m venv /tmp/pw && /tmp/pw/bin/pip install playwright

Set the scene first, as the screenshots in the repository were made (see
docs/operations.md, "Screenshots"):

    M8_STATE_DIR=/tmp/m8-shots .venv/bin/m8 dev          # in one shell; Ctrl-C stops it
    export M8CTL_CONFIG=/tmp/m8-shots/m8ctl.json
    printf 'a' | .venv/bin/m8ctl secret put team/db/password
    printf 'b' | .venv/bin/m8ctl secret put team/db/password --store aws-dev
    kill -STOP <pid of the "aws" server that m8 dev printed>   # the AWS emulator hangs
    printf 'c' | .venv/bin/m8ctl secret put team/api/token --store aws-dev --no-wait
    # about 3 minutes later the upload is `failed` and in m8.dead.reactor.aws
    kill -CONT <that pid>

Then, with the virtual host `m8 dev` made (`m8-dev-...`, in the management UI's list):

    M8_SHOTS_PASSWORD=guest /tmp/pw/bin/python docs/img/make_screenshots.py m8-dev-...

The user (`--user`, default guest) needs the management UI and read rights on the
virtual host; its password comes from the environment (M8_SHOTS_PASSWORD), never
from an argument. "Get messages" is asked with "Nack message requeue true": the dead
letter stays in its queue.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from urllib.parse import quote

from playwright.sync_api import Page, sync_playwright

HERE = Path(__file__).resolve().parent
WIDTH, HEIGHT = 1400, 900


def login(page: Page, base: str, user: str, password: str) -> None:
    """Logs in through the UI's own form (the single-page app takes no basic auth)."""
    page.goto(f"{base}/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("input[type=submit]")
    page.wait_for_selector("#logout", timeout=15_000)


def show(page: Page, base: str, fragment: str, wait_for: str) -> None:
    """Opens a page of the app and waits until `wait_for` (text) is on it."""
    page.goto(f"{base}/#/{fragment}")
    page.wait_for_selector(f"text={wait_for}", timeout=15_000)
    page.wait_for_timeout(500)  # the app fills its tables after the first paint


def select_vhost(page: Page, vhost: str) -> None:
    """Shows only `vhost` in lists (the UI's own selector, top right)."""
    page.select_option("select#show-vhost", vhost)
    page.wait_for_timeout(800)


def shot(page: Page, name: str, full_page: bool = False) -> None:
    path = HERE / name
    page.screenshot(path=str(path), full_page=full_page)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vhost", help="the virtual host of m8's topology (m8 dev's m8-dev-...)")
    parser.add_argument("--url", default="http://127.0.0.1:15672", help="management UI")
    parser.add_argument("--user", default="guest")
    parser.add_argument("--dlq", default="m8.dead.reactor.aws", help="a DLQ holding a message")
    parser.add_argument("--queue", default="m8.reactor.aws", help="a work queue to show")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    password = os.environ.get("M8_SHOTS_PASSWORD", "guest")
    vhost = quote(args.vhost, safe="")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=args.chromium, headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        login(page, args.url, args.user, password)
        show(page, args.url, "queues", "m8.api.projections")
        select_vhost(page, args.vhost)
        shot(page, "rabbitmq-queues.png")
        show(page, args.url, "exchanges", "m8.events")
        select_vhost(page, args.vhost)
        shot(page, "rabbitmq-exchanges.png")
        show(page, args.url, f"queues/{vhost}/{quote(args.queue, safe='')}", "Bindings")
        # The work queue's arguments and its bindings (m8.events and m8.handback).
        shot(page, "rabbitmq-reactor-queue.png", full_page=True)
        show(page, args.url, f"queues/{vhost}/{quote(args.dlq, safe='')}", "Get messages")
        page.click("h2:has-text('Get messages')")
        page.click("input[type=submit][value='Get Message(s)']")
        page.wait_for_selector("text=x-death", timeout=15_000)
        page.wait_for_timeout(500)
        # From the page's top to the end of the message (no scrolling: the header would
        # be drawn twice).
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_timeout(300)
        end = page.locator("h2:has-text('Move messages')").bounding_box()
        height = int(end["y"] + end["height"] + 10) if end else HEIGHT
        page.screenshot(
            path=str(HERE / "rabbitmq-dead-letter.png"),
            full_page=True,
            clip={"x": 0, "y": 0, "width": WIDTH, "height": height},
        )
        print(f"wrote {HERE / 'rabbitmq-dead-letter.png'}")
        browser.close()


if __name__ == "__main__":
    main()
