"""SemiDiscreteOT on a CUDA device: fit, assign, sample, save and load, near-duplicates, and the
distributed solve under nccl with one process. Marked ``gpu``; skipped without CUDA (so CI, which
has no GPU, skips them cleanly)."""

import numpy as np
import pytest
import torch
import torch.distributed as dist

from otgen.transport import SemiDiscreteOT

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def problem():
    return np.random.default_rng(0).normal(size=(300, 8))


@pytest.fixture(scope="module")
def on_cuda(problem):
    return SemiDiscreteOT(tol=0.03, device="cuda").fit(problem)


@pytest.fixture(scope="module")
def on_cpu(problem):
    return SemiDiscreteOT(tol=0.03, device="cpu").fit(problem)


def test_fit_on_cuda_converges_and_keeps_its_tensors_there(on_cuda):
    assert on_cuda.converged_
    for t in (on_cuda.targets_, on_cuda.weights_, on_cuda.heights_, on_cuda.center_):
        assert t.device.type == "cuda"
    masses = on_cuda.cell_masses(2**20, seed=5)
    assert 0.5 * np.abs(masses - 1 / 300).sum() <= 0.03 + 0.01        # independent points, noise ~ 0.004


def test_cuda_and_cpu_fits_solve_the_same_problem(on_cuda, on_cpu):
    """Different GEMM rounding and reductions: not the same bits, but both meet tol, and the
    cells of one map carry the masses the other certified."""
    X = np.random.default_rng(1).uniform(-1, 1, size=(200_000, 8)).astype(np.float32)
    a, b = on_cuda.assign(X), on_cpu.assign(X)
    assert isinstance(a, np.ndarray) and a.dtype == np.int64
    ma, mb = (np.bincount(c, minlength=300) / len(X) for c in (a, b))
    assert 0.5 * np.abs(ma - mb).sum() <= 0.03 + 0.03 + 0.02          # each within tol of ν, plus noise


def test_assign_transform_potential_and_sample_on_cuda(on_cuda):
    X = torch.rand(1000, 8, device="cuda") * 2 - 1
    idx = on_cuda.assign(X)
    assert idx.device.type == "cuda"
    torch.testing.assert_close(on_cuda.transform(X), on_cuda.targets_[idx])
    u = on_cuda.potential(X)
    vals, top = on_cuda.topk(X, 2)
    assert torch.equal(top[:, 0], idx)
    torch.testing.assert_close(u.float(), vals[:, 0].float(), rtol=1e-5, atol=1e-5)
    pts, info = on_cuda.sample(500, seed=3, return_info=True)
    assert pts.shape == (500, 8) and isinstance(pts, np.ndarray)
    np.testing.assert_array_equal(pts, on_cuda.targets_.cpu().numpy()[info["cells"]])


def test_save_on_cuda_load_anywhere(on_cuda, tmp_path):
    on_cuda.save(tmp_path / "ot.pt")
    for device in ("cpu", "cuda"):
        back = SemiDiscreteOT.load(tmp_path / "ot.pt", device=device)
        assert back.heights_.device.type == device
        torch.testing.assert_close(back.heights_.cpu(), on_cuda.heights_.cpu(), rtol=0, atol=0)
        X = np.random.default_rng(2).uniform(-1, 1, size=(1000, 8))
        np.testing.assert_array_equal(back.assign(X), on_cuda.assign(X))


def test_near_duplicates_on_cuda_score_in_float64(problem):
    Y = problem.copy()
    Y[299] = Y[4] + 1e-7
    ot = SemiDiscreteOT(tol=0.03, device="cuda").fit(Y)
    assert ot.converged_ and ot._frame_targets.dtype == torch.float64 and ot._frame_targets.device.type == "cuda"
    masses = ot.cell_masses(2**20, seed=5) * 300
    assert abs(masses[4] - 1) < 0.3 and abs(masses[299] - 1) < 0.3


def test_exact2d_with_a_cuda_device():
    Y = np.random.default_rng(3).normal(size=(100, 2))
    ot = SemiDiscreteOT(tol=1e-4, device="cuda").fit(Y)        # method "auto": exact on the CPU, map on CUDA
    assert ot.converged_ and ot.heights_.device.type == "cuda" and ot.history_[-1]["n_samples"] == 0


@pytest.mark.skipif(not dist.is_available() or not dist.is_nccl_available(), reason="needs nccl")
@pytest.mark.parametrize("parallel", ["samples", "targets"])
def test_distributed_solve_under_nccl_with_one_process(problem, on_cuda, tmp_path, parallel):
    """World size 1: the distributed code path (collectives over nccl) gives the single-process answer
    (sample-parallel: exactly; target-sharded with one shard: the same scorer, so exactly too)."""
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        torch.cuda.set_device(0)
        ot = SemiDiscreteOT(tol=0.03, device="cuda", parallel=parallel).fit(problem)
    finally:
        dist.destroy_process_group()
    assert ot.converged_ and ot.n_iter_ == on_cuda.n_iter_
    torch.testing.assert_close(ot.heights_, on_cuda.heights_, rtol=0, atol=1e-9)
