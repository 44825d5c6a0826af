"""The notebooks: stored with their outputs (figures included), and still executable with nbclient."""

import asyncio
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["mnist_mode_mixture.ipynb", "video_critical_states.ipynb"]


@pytest.fixture(params=NAMES)
def notebook(request):
    """One stored notebook, as read from the repository."""
    return nbformat.read(NOTEBOOKS / request.param, as_version=4)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _errors(nb):
    return [o for c in _code_cells(nb) for o in c.get("outputs", []) if o.get("output_type") == "error"]


def _last_text(nb):
    return "".join(o.get("text", "") for o in nb.cells[-1].outputs)


def test_notebook_is_stored_with_its_outputs(notebook):
    """Every code cell ran, in order, without an error; the figures are in the file (PNG); the report printed."""
    counts = [c.execution_count for c in _code_cells(notebook)]
    assert counts == list(range(1, len(counts) + 1))
    assert not _errors(notebook)
    assert any("image/png" in o.get("data", {}) for c in _code_cells(notebook) for o in c.outputs)
    assert "| generator |" in _last_text(notebook)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Both notebooks executed at once, each cell in order in its own fresh kernel, with the notebooks' smoke
    settings (fewer training steps): name -> (the executed notebook, the exception its run raised or None).

    Each kernel runs on one thread (``OMP_NUM_THREADS=1``; the notebooks set one torch thread), so on a
    two-core machine the two kernels run side by side: the wall time is the longer notebook's, not the sum.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("OTGEN_NOTEBOOK_SMOKE", "1")
        nbs = {name: nbformat.read(NOTEBOOKS / name, as_version=4) for name in NAMES}
        clients = [nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {
            "path": str(tmp_path_factory.mktemp(name.split(".")[0]))}}) for name, nb in nbs.items()]

        async def execute_all():
            return await asyncio.gather(*(c.async_execute() for c in clients), return_exceptions=True)

        done = asyncio.run(execute_all())
    return {name: (nb, err if isinstance(err, BaseException) else None) for (name, nb), err in zip(nbs.items(), done)}


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(executed, name):
    """Execute every cell in a fresh kernel, with the notebook's smoke settings (fewer training steps)."""
    notebook, err = executed[name]
    if err is not None:
        raise err                                       # a cell failed (CellExecutionError) or the kernel did
    assert not _errors(notebook)
    assert "| generator |" in _last_text(notebook)      # the comparison cell printed its report table
