"""One module per dashboard page (see handlers/dashboard/__init__.py: how a page plugs in)."""
