import sys


def pytest_configure(config):
    # Installed third-party strategies must not leak into the tests (llm's pattern).
    sys._called_from_test = True
