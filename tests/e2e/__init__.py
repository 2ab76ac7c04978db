"""End-to-end: the whole cluster through Vagrant's docker provider (`tox -e e2e`)."""
