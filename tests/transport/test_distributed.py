"""Sample-parallel solve over torch.distributed (gloo, 2 processes on loopback)."""

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from otgen.transport import SemiDiscreteOT
from otgen.transport._dist import _sortable

WORKER = Path(__file__).with_name("dist_worker.py")

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _spawn(task, out, world=2):
    root = str(WORKER.parents[2])   # the checkout under test, whatever is installed
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    init = out / "init"
    return [subprocess.Popen([sys.executable, str(WORKER), task, str(r), str(world), str(init), str(out)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            for r in range(world)]


def _wait(procs, timeout=240):
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=timeout)[0].decode())
        except subprocess.TimeoutExpired:
            for q in procs:
                os.killpg(q.pid, signal.SIGKILL)
            raise AssertionError("a rank hung")
    return [p.returncode for p in procs], outs


def _single():
    sys.path.insert(0, str(WORKER.parent))
    try:
        from dist_worker import problem
    finally:
        sys.path.pop(0)
    Y = problem()
    torch.set_num_threads(1)
    return SemiDiscreteOT(tol=0.01, verbose=False).fit(Y)


@pytest.fixture(scope="module")
def single():
    n = torch.get_num_threads()
    try:
        return _single()
    finally:
        torch.set_num_threads(n)


def test_two_ranks_equal_the_single_process_fit(tmp_path, single):
    codes, outs = _wait(_spawn("fit", tmp_path))
    assert codes == [0, 0], outs
    h0, h1 = (np.load(tmp_path / f"heights{r}.npy") for r in range(2))
    np.testing.assert_array_equal(h0, h1)                 # every rank holds the same heights
    assert single.converged_
    assert int((tmp_path / "n_iter0.txt").read_text()) == single.n_iter_
    # same points, exact reductions: the same answer as one process (GEMM rounding aside)
    np.testing.assert_allclose(h0, single.heights_.numpy(), rtol=0, atol=1e-12)


def test_two_ranks_take_the_single_process_coarse_steps(tmp_path):
    """Tight clusters: the coarse step (group scores, its Hessian, its line search) reduced over the ranks
    gives the one-process answer."""
    sys.path.insert(0, str(WORKER.parent))
    try:
        from dist_worker import clusters
    finally:
        sys.path.pop(0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = SemiDiscreteOT(tol=0.03, verbose=False, init="linear").fit(clusters())
    finally:
        torch.set_num_threads(n)
    codes, outs = _wait(_spawn("clusters", tmp_path))
    assert codes == [0, 0], outs
    h0, h1 = (np.load(tmp_path / f"heights{r}.npy") for r in range(2))
    np.testing.assert_array_equal(h0, h1)
    coarse = sum(bool(e["coarse_groups"]) for e in one.history_)
    assert one.converged_ and coarse > 0 and int((tmp_path / "coarse0.txt").read_text()) == coarse
    np.testing.assert_allclose(h0, one.heights_.numpy(), rtol=0, atol=1e-12)


def test_target_sharded_fit_equals_the_single_process_fit(tmp_path, single):
    """Same answer up to ties: scores equal in float32 (about one point in 2^15 here) are ordered by
    ``torch.topk`` within a shard and by the merge across shards, so one point's cell can differ
    and the trajectories part after an accept decision flips. Both solutions meet tol = 0.01."""
    codes, outs = _wait(_spawn("targets", tmp_path))
    assert codes == [0, 0], outs
    h0, h1 = (np.load(tmp_path / f"heights{r}.npy") for r in range(2))
    np.testing.assert_array_equal(h0, h1)
    assert abs(int((tmp_path / "n_iter0.txt").read_text()) - single.n_iter_) <= 2
    sharded = copy.copy(single)                    # the same map with the sharded run's heights
    sharded.heights_, sharded._scorer_cache = torch.as_tensor(h0), None
    nu = 1 / len(h0)
    for ot in (single, sharded):                   # measured with independent points (noise ~ 0.002)
        assert 0.5 * np.abs(ot.cell_masses(2**20, seed=11) - nu).sum() <= 0.01 + 0.005


def test_killed_run_resumes_to_the_same_answer(tmp_path, single):
    procs = _spawn("sleep", tmp_path)
    deadline = time.time() + 180
    while not all((tmp_path / f"stalled{r}").exists() for r in range(2)):
        if any(p.poll() is not None for p in procs) or time.time() > deadline:   # a hang guard, not a timing check
            pytest.fail("ranks died or hung before iteration 3")
        time.sleep(0.2)
    for p in procs:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    ck = tmp_path / "ck.pt"
    partial = SemiDiscreteOT.load(ck)                       # a single process reads rank 0's checkpoint
    assert partial.n_iter_ == 2 and not partial.converged_
    (tmp_path / "init").unlink(missing_ok=True)
    codes, outs = _wait(_spawn("resume", tmp_path))
    assert codes == [0, 0], outs
    np.testing.assert_allclose(np.load(tmp_path / "heights0.npy"), single.heights_.numpy(), rtol=0, atol=1e-12)
    assert int((tmp_path / "n_iter0.txt").read_text()) == single.n_iter_


def test_bad_input_on_one_rank_fails_every_rank(tmp_path):
    codes, outs = _wait(_spawn("bad", tmp_path), timeout=120)
    assert codes == [3, 3], outs
    msgs = [(tmp_path / f"error{r}.txt").read_text() for r in range(2)]
    assert msgs[0] == msgs[1]
    assert msgs[0].startswith("ValueError: rank 1 of 2:") and "NaN" in msgs[0]


def test_distributed_order_statistics_and_sharded_scoring_are_exact(tmp_path):
    codes, outs = _wait(_spawn("kth", tmp_path), timeout=120)
    assert codes == [0, 0], outs
    for r in range(2):
        got, want, sharded_equal = eval((tmp_path / f"kth{r}.txt").read_text())
        assert got == want
        assert sharded_equal == [True, True, True]


def test_parallel_needs_a_process_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        SemiDiscreteOT(parallel="samples", verbose=False).fit(np.random.default_rng(0).normal(size=(20, 2)))
    with pytest.raises(ValueError, match="parallel"):
        SemiDiscreteOT(parallel="gpus", verbose=False).fit(np.zeros((3, 2)))


def test_sortable_keys_keep_the_float_order():
    x = torch.tensor([-3.5, -1e-300, -0.0, 0.0, 1e-300, 2.0, float("inf")], dtype=torch.float64)  # ascending
    k = _sortable(x)
    assert bool((k[1:] > k[:-1]).all())
    y = torch.randn(1000, dtype=torch.float64) * torch.logspace(-200, 200, 1000, dtype=torch.float64)
    assert torch.equal(torch.argsort(_sortable(y)), torch.argsort(y))


def test_fit_ot_cli_under_torchrun(tmp_path):
    """`torchrun ... otgen fit-ot` writes the same potential as one process."""
    Y = np.random.default_rng(1).normal(size=(150, 3))
    np.save(tmp_path / "codes.npy", Y)
    root = str(WORKER.parents[2])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=root)
    args = ["fit-ot", str(tmp_path / "codes.npy"), "--tol", "0.02", "--quiet"]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "otgen.cli", *args, "--out", str(tmp_path / "two.pt")],
                         env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    one = subprocess.run([sys.executable, "-m", "otgen.cli", *args, "--out", str(tmp_path / "one.pt")],
                         env=env, capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr
    two, one = SemiDiscreteOT.load(tmp_path / "two.pt", "cpu"), SemiDiscreteOT.load(tmp_path / "one.pt", "cpu")
    assert two.converged_ and two.n_iter_ == one.n_iter_
    torch.testing.assert_close(two.heights_, one.heights_, rtol=0, atol=1e-12)
