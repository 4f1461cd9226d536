"""On CUDA, the STN layers and the batched augmentation give what they give on CPU.

Every test is marked `gpu` and skipped where CUDA is not available; `benchmarks/gpu_check.sh`
runs them (`pytest -m gpu`) on a GPU machine. TF32 is switched off for the comparison, so the
tolerances are those of float32 kernels that sum in another order.
"""

from __future__ import annotations

import pytest
import torch

from stn import augment
from stn.layers import STNConv2d, STNEmbedding, STNLinear
from stn.lstm import STNLSTM

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
TOL = {"rtol": 1e-4, "atol": 1e-5}
N_HYPER, B = 3, 6


@pytest.fixture(autouse=True)
def exact_float32():
    """No TF32 in matmuls and convolutions during a test (restored after)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _run(module: torch.nn.Module, device: str, *inputs: torch.Tensor, **kw):
    """Outputs and the gradients of every parameter and floating input on `device`."""
    m = module.to(device)
    m.zero_grad(set_to_none=True)
    xs = [
        x if x is None else x.detach().to(device).requires_grad_(x.is_floating_point())
        for x in inputs
    ]
    out = m(*xs, **kw)
    out = out[0] if isinstance(out, tuple) else out
    (out.float() * torch.linspace(-1, 1, out.numel(), device=device).view_as(out)).sum().backward()
    grads = [p.grad.cpu() for p in m.parameters() if p.grad is not None]
    grads += [x.grad.cpu() for x in xs if x is not None and x.grad is not None]
    return out.detach().cpu(), grads


def _same_on_cuda(module: torch.nn.Module, *inputs: torch.Tensor, **kw) -> None:
    out_cpu, g_cpu = _run(module, "cpu", *inputs, **kw)
    out_gpu, g_gpu = _run(module, "cuda", *inputs, **kw)
    torch.testing.assert_close(out_gpu, out_cpu, **TOL)
    assert len(g_gpu) == len(g_cpu) > 0
    for a, b in zip(g_gpu, g_cpu):
        torch.testing.assert_close(a, b, **TOL)


def _h() -> torch.Tensor:
    return torch.randn(B, N_HYPER)


def test_linear_on_cuda_matches_cpu():
    torch.manual_seed(0)
    _same_on_cuda(STNLinear(20, 30, N_HYPER), torch.randn(B, 20), _h())


def test_conv_on_cuda_matches_cpu():
    torch.manual_seed(0)
    conv = STNConv2d(3, 16, 3, N_HYPER, stride=2, padding=1)
    _same_on_cuda(conv, torch.randn(B, 3, 16, 16), _h())


def test_embedding_on_cuda_matches_cpu():
    torch.manual_seed(0)
    tokens = torch.randint(0, 50, (7, B))
    _same_on_cuda(STNEmbedding(50, 12, N_HYPER), tokens, _h())


@pytest.mark.parametrize("n_hyper", [0, N_HYPER], ids=["plain-cudnn", "stn"])
def test_lstm_on_cuda_matches_cpu(n_hyper):
    torch.manual_seed(0)
    lstm = STNLSTM(10, 16, 2, n_hyper).eval()  # eval: no DropConnect or locked-dropout draws
    h = _h() if n_hyper else None
    _same_on_cuda(lstm, torch.randn(9, B, 10), h)


def test_color_jitter_on_cuda_matches_cpu():
    torch.manual_seed(0)
    x = torch.rand(B, 3, 16, 16)
    s = torch.rand(4, B) * torch.tensor([[1.0], [1.0], [1.0], [0.5]])
    factors = augment.jitter_factors(x, *s)
    cpu = augment.apply_color(x, factors)
    gpu = augment.apply_color(x.cuda(), factors.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-5)


def test_cutout_mask_on_cuda_matches_cpu():
    torch.manual_seed(0)
    length, holes = torch.randint(0, 9, (B,)), torch.randint(0, 3, (B,))
    centres = torch.randint(0, 16, (B, 2, 2))
    cpu = augment.cutout_mask((16, 16), length, holes, centres)
    gpu = augment.cutout_mask((16, 16), length.cuda(), holes.cuda(), centres.cuda()).cpu()
    assert torch.equal(gpu, cpu)


def test_augment_runs_on_the_batch_device():
    """The whole batch stays on the GPU, strengths per example, and its range is kept."""
    x = torch.rand(B, 3, 16, 16, device="cuda")
    s = torch.full((B,), 0.3, device="cuda")
    y = augment.cutout(augment.color_jitter(x, s, s, s, s / 2), torch.full((B,), 4.0), 1)
    assert y.device.type == "cuda" and y.shape == x.shape
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0


def test_color_jitter_in_a_random_order_on_cuda_matches_cpu():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 16, 16)
    factors = augment.jitter_factors(x, 0.8, 0.8, 0.8, 0.4)
    order = augment.jitter_order(64)
    cpu = augment.apply_color(x, factors, order)
    gpu = augment.apply_color(x.cuda(), factors.cuda(), order.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-5)


def test_input_scaling_stays_on_the_device_and_in_its_range():
    from stn.regularizers import input_scaling

    x = torch.ones(4096, 3, 4, 4, device="cuda")
    s = torch.full((4096,), 0.3, device="cuda")
    f = input_scaling(x, s)[:, 0, 0, 0]
    assert f.device.type == "cuda"
    assert float(f.min()) >= 1 / 1.3 - 1e-6 and float(f.max()) <= 1.3 + 1e-6


def test_ptb_folded_evaluation_on_cuda_matches_cpu(tmp_path):
    """The evaluation runs cuDNN's LSTM on the folded STN weights (batch 1 for test): the same
    perplexity as on CPU."""
    from experiments.data.synthetic import write_ptb
    from experiments.tasks import PTBTask
    from stn.hyper import Hyper

    write_ptb(tmp_path, n_lines=80, vocab=60)
    task = PTBTask(data_dir=str(tmp_path), emb=32, hidden=32, batch=4, bptt=10, eval_batch=3)
    out = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        problem = task.build(0, device)
        model = problem.build_model(len(problem.space))
        hyper = Hyper(problem.space).to(device)
        fn = lambda b, h=hyper: h.batch(b, perturb=False)  # noqa: E731
        out[device] = [problem.evaluate(model, fn, s)["loss"] for s in ("val", "test")]
    assert out["cuda"] == pytest.approx(out["cpu"], rel=1e-4)
