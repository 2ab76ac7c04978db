"""MiniCluster: bring up a kubeadm cluster on Vagrant and prove it works."""

import logging

__version__ = "0.1.0"

# The CLI and pytest configure handlers; a library only names its loggers.
logging.getLogger(__name__).addHandler(logging.NullHandler())
