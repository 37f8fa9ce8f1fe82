import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item, for the page fixture's screenshot of a failure."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report
