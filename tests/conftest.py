import pytest
import torch

torch.set_num_threads(2)

#: fixtures that run a whole workflow: the tests that use them are slow
_WORKFLOW_FIXTURES = {"tiny_run", "tiny_copy"}


def pytest_collection_modifyitems(items):
    """Tests that run the tiny workflow, and the SLURM test, are marked slow (``make
    test-fast`` leaves them out; ``make test`` runs everything)."""
    for item in items:
        if _WORKFLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The whole DAG of tests/tiny_config.yaml, run once per session: (work dir, outputs made).
    Tests that change files work on a copy (:func:`tiny_copy`)."""
    from workflow_api import snakemake

    work = tmp_path_factory.mktemp("tiny")
    made = snakemake(work)
    return work, made


@pytest.fixture
def tiny_copy(tiny_run, tmp_path):
    """A private copy of the tiny run's working directory (results, logs, Snakemake's records)."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(tiny_run[0], work, symlinks=True)
    return work
