"""The line search's predicted TV against the exact TV on the same points, step length by step length.

For every accepted iteration of a fit at a fixed M (``n_samples = max_samples = M``) it prints the
chosen step length, the largest direction entry, the revived cells, and for α = 1, 1/2, 1/4, 1/8 on
the first 2^16 line-search points: the TV predicted from each point's top-6 cells, the exact TV after
the step (full rescore), with the revival added, and the share of points whose predicted cell is
the exact one. Coarse levels of the multiscale start are printed too (the blocks restarting at it 0).
The step check is off (``_CHECK_HALVINGS = 0``: the line search alone, as before) unless ``--check``.

    python benchmarks/line_search_check.py 10000 16 262144 8    # N d M iterations

``results/line_search_check_10000x16.txt`` is that command's output (before the step check existed).
"""
import sys, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402
from otgen.data.toy2d import gaussian_mixture  # noqa: E402
from otgen.transport import SemiDiscreteOT  # noqa: E402
import otgen.transport.semidiscrete as S  # noqa: E402
torch.set_num_threads(1)
N, d = int(sys.argv[1]), int(sys.argv[2]); M = int(sys.argv[3]); P = 1 << 16
Y = torch.as_tensor(gaussian_mixture(N, d, seed=0)[0], dtype=torch.float32)
if "--check" not in sys.argv:
    S._CHECK_HALVINGS = 0
orig = S.SemiDiscreteOT._newton_update
def tvs(cnt, w, m): return 0.5 * float((cnt / m - w).abs().sum())
def patched(self, state, problem, ev, grad, tv):
    new = orig(self, state, problem, ev, grad, tv)
    X, vals, idx = ev.points[:P], ev.topk_vals[:P].double(), ev.topk_idx[:P]
    w = problem.weights; n = w.shape[0]; h = state.heights
    rows = []
    for a in (1.0, 0.5, 0.25, 0.125):
        pred = idx.gather(1, (vals + a * new.direction[idx]).argmax(1, keepdim=True)).squeeze(1)
        ex = problem.scorer.best(X, (h + a * new.direction).to(X.dtype))[1]
        exr = problem.scorer.best(X, (h + a * new.direction + new.rescue).to(X.dtype))[1]
        c = lambda i: torch.bincount(i, minlength=n).double()
        rows.append(f"a={a}: pred {tvs(c(pred), w, P):.3f} exact {tvs(c(ex), w, P):.3f} +rescue {tvs(c(exr), w, P):.3f} agree {float((pred==ex).float().mean()):.3f}")
    nd = new.direction
    print(f"it {state.it} tv {tv:.3f} chosen a={new.alpha} |d|max {float(nd.abs().max()):.3g} rescue n {int((new.rescue>0).sum())} max {float(new.rescue.max()):.3g}; at a=0 {tvs(torch.bincount(idx[:,0], minlength=n).double(), w, P):.3f}", flush=True)
    for r in rows: print("   ", r, flush=True)
    return new
S.SemiDiscreteOT._newton_update = patched
sd = SemiDiscreteOT(tol=0.02, seed=0, max_iter=int(sys.argv[4]), n_samples=M, max_samples=M)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    sd.fit(Y, callback=lambda it, h, e: print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in e.items()}, flush=True))
