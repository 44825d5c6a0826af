"""Where a fit's time goes: cProfile of a default ``SemiDiscreteOT`` fit (one torch thread).

    python benchmarks/profile_fit.py                 # 10000 x 16, tol 0.02, the first 6 iterations
    python benchmarks/profile_fit.py --size 5000x16 --iterations 10

Prints the fit's history (TV, its noise, M, accepted, time) and the profile sorted by own time and
by cumulative time; ``results/profile_10000x16.txt`` is one such output.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:          # profile this checkout even without an install
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from otgen.data.toy2d import gaussian_mixture  # noqa: E402
from otgen.transport import SemiDiscreteOT  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="10000x16")
    p.add_argument("--tol", type=float, default=0.02)
    p.add_argument("--iterations", type=int, default=6)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    N, d = (int(float(x)) for x in args.size.lower().split("x"))
    Y = torch.as_tensor(gaussian_mixture(N, d, seed=0)[0], dtype=torch.float32)
    sd = SemiDiscreteOT(tol=args.tol, seed=0, max_iter=args.iterations)
    pr = cProfile.Profile()
    t = time.perf_counter()
    pr.enable()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sd.fit(Y)
    pr.disable()
    print("wall", time.perf_counter() - t)
    for h in sd.history_:
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()})
    st = pstats.Stats(pr)
    st.sort_stats("tottime").print_stats(25)
    st.sort_stats("cumulative").print_stats(45)


if __name__ == "__main__":
    main()
