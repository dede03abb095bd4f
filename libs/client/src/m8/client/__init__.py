"""The m8 client: an SDK over the HTTP API and the `m8ctl` command.

Imports stay light (httpx, PyNaCl, typer, rich): m8ctl must start fast.
"""
