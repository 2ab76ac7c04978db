"""`python -m tests.e2e [pytest options]`: run the end-to-end phases."""

import sys

import pytest

if __name__ == "__main__":
    sys.exit(pytest.main(["-p", "no:cacheprovider", "tests/e2e", *sys.argv[1:]]))
