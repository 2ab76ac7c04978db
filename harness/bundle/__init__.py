"""The offline bundle: Kubernetes, its images and CNI plugins, built from registries.

``minicluster bundle build`` writes ``<cache>/bundle/v<version>/``; the provisioners
install from it through provision/bundle.sh. See docs/offline-bundle.md.
"""

from harness.bundle.command import add_parser

__all__ = ["add_parser"]
