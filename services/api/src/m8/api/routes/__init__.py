"""HTTP routes: translate between HTTP and the handlers and queries, nothing more."""
