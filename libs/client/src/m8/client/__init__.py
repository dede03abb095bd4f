"""The m8 client: an SDK over the HTTP API and the `m8ctl` command.

Imports stay light (the standard library's http.client, PyNaCl, typer, rich): m8ctl
must start fast.
"""
