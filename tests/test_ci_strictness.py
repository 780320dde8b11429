"""Under CI=true a skip fails the run unless it is by design (tests/conftest.py, issue 15).

Each test runs pytest on a small test file with this suite's conftest hooks, once as CI and once not.
"""

from __future__ import annotations

import pytest

CONFTEST = "pytest_plugins = ['tests.conftest']\n"

SKIPS = '''
import pytest

@pytest.fixture(scope="module")
def server():
    pytest.skip("no server listens on 127.0.0.1:8080")

def test_passes():
    pass

def test_plain_skip():
    pytest.skip("the packaged mentor is not installed")

@pytest.mark.skipif(True, reason="llama-cpp-python is not installed")
def test_skipif_missing_package():
    pass

def test_fixture_skip(server):
    pass

@pytest.mark.skipif(True, reason="opt-in: set MENTORCOLLAB_VLLM_PYTHON")
def test_opt_in():
    pass

@pytest.mark.allow_skip(reason="the standard suite skips what the class declares it lacks")
def test_declared_capability():
    pytest.skip("Test requires tool calling.")

@pytest.mark.xfail(reason="a known failure, not a skip", strict=True)
def test_known_failure():
    assert False
'''

MODULE_SKIP = '''
import pytest

pytest.importorskip("no_such_package_for_mentorcollab", reason="no_such_package is installed by install.sh")

def test_never_collected():
    pass
'''


@pytest.fixture
def strict_suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    return pytester


def test_under_ci_a_skip_fails_unless_it_is_opt_in_or_declared(
    strict_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    strict_suite.makepyfile(test_skips=SKIPS)
    monkeypatch.setenv("CI", "true")
    result = strict_suite.runpytest("-ra", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1, errors=2, skipped=2, xfailed=1)  # a failed setup is an error
    outcomes = {report.head_line: report.outcome for report in result.reprec.getreports("pytest_runtest_logreport")
                if report.when == "call" or not report.passed}
    assert outcomes["test_plain_skip"] == "failed"
    assert outcomes["test_skipif_missing_package"] == "failed"  # a skipif mark is decided in setup
    assert outcomes["test_fixture_skip"] == "failed"
    assert outcomes["test_opt_in"] == "skipped"
    assert outcomes["test_declared_capability"] == "skipped"
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    for line in (
        "CI=true: a skip fails the run unless *",  # the header says so
        "CI=true: skipped, which fails the run: the packaged mentor is not installed",
        "CI=true: skipped, which fails the run: llama-cpp-python is not installed",
        "CI=true: skipped, which fails the run: no server listens on 127.0.0.1:8080",
        # -ra lists the skips that remain, with their reasons, at the end of the run
        "SKIPPED * opt-in: set MENTORCOLLAB_VLLM_PYTHON",
        "SKIPPED * Test requires tool calling.",
    ):
        result.stdout.fnmatch_lines([line])


def test_outside_ci_a_skip_is_a_skip(strict_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    strict_suite.makepyfile(test_skips=SKIPS)
    monkeypatch.delenv("CI", raising=False)
    result = strict_suite.runpytest("-ra", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=5, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*SKIPPED*the packaged mentor is not installed"])


def test_under_ci_a_module_skipped_at_import_stops_the_run(
    strict_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    strict_suite.makepyfile(test_module_skip=MODULE_SKIP, test_other="def test_other():\n    pass\n")
    monkeypatch.setenv("CI", "true")
    result = strict_suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error: nothing runs
    result.stdout.fnmatch_lines(["*CI=true: skipped, which fails the run: no_such_package is installed by install.sh"])
    monkeypatch.setenv("CI", "false")
    result = strict_suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)


HANGS = "import time\n\ndef test_hangs():\n    time.sleep(60)\n\ndef test_next():\n    pass\n"


def test_a_hanging_test_fails_at_its_timeout(pytester: pytest.Pytester, pytestconfig: pytest.Config) -> None:
    assert float(pytestconfig.getini("timeout")) > 0, "pyproject.toml sets a per-test timeout"
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_hang=HANGS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-o", "timeout=1", "-o", "timeout_method=signal")
    result.assert_outcomes(failed=1, passed=1)  # the hanging test fails and the run goes on
    result.stdout.fnmatch_lines(["*Failed: Timeout (>1.0s) from pytest-timeout*"])


def test_under_ci_the_run_refuses_to_start_without_the_timeout_plugin(
    strict_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    strict_suite.makepyfile(test_other="def test_other():\n    pass\n")
    monkeypatch.setenv("CI", "true")
    result = strict_suite.runpytest("-p", "no:cacheprovider", "-p", "no:timeout")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*CI=true: the per-test timeout (pyproject.toml) needs pytest-timeout*"])
    monkeypatch.delenv("CI")
    strict_suite.runpytest("-p", "no:cacheprovider", "-p", "no:timeout").assert_outcomes(passed=1)
