"""The reactors: one consumer per upstream store type, writing uploads upstream.

`m8 reactor <type>` (cli.py, a command per type registered in m8.stores) runs
`bootstrap.run(settings, store_type)`; the handler is `reactor.Reactor`; it writes through
the adapters of m8.stores.adapters, which `stores.StoreAdapters` builds from the reactor's
credentials (credentials.py).
"""
