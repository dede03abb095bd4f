"""The reactors: one consumer per upstream store type, writing uploads upstream.

`m8 reactor vault|aws` (cli.py) runs `bootstrap.run(settings, store_type)`; the handler
is `reactor.Reactor`; the upstream adapters live in `adapters/`.
"""
