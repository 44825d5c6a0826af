import math

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks gain nothing from threads; avoid oversubscribing shared CPUs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class GaussianOracle(torch.nn.Module):
    """Exact eps-predictor E[eps | x_t] for data N(m, S).

    x_t = sqrt(a) x0 + sqrt(1-a) eps is jointly Gaussian with eps, so
    E[eps | x_t] = sqrt(1-a) (a S + (1-a) I)^{-1} (x_t - sqrt(a) m).
    ``M`` and ``S`` (class attributes) are the 2-D test Gaussian the samplers are checked on.
    """

    M = torch.tensor([1.0, -2.0])
    S = torch.tensor([[0.5, 0.3], [0.3, 1.0]])

    def __init__(self, schedule, m, S):
        super().__init__()
        self.abar = schedule.alphas_cumprod
        self.mean, self.cov = torch.as_tensor(m, dtype=torch.float64), torch.as_tensor(S, dtype=torch.float64)

    def forward(self, x, t):
        a = float(self.abar[int(t[0])])
        C = a * self.cov + (1 - a) * torch.eye(len(self.mean), dtype=torch.float64)
        r = x.double() - math.sqrt(a) * self.mean
        return (math.sqrt(1 - a) * torch.linalg.solve(C, r.T).T).to(x.dtype)


@pytest.fixture
def gaussian_oracle():
    """The exact eps-predictor class ``GaussianOracle(schedule, m, S)`` (test data: ``.M``, ``.S``)."""
    return GaussianOracle
