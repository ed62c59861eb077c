import pytest
import torch

from vtok.quantizers import FSQ, VQ, QuantizerOutput


def test_fsq_index_code_round_trip_covers_whole_codebook():
    q = FSQ([8, 5, 3])
    assert q.codebook_size == 120
    all_ids = torch.arange(q.codebook_size).view(1, -1)
    codes = q.indices_to_codes(all_ids)  # (1, 120, 3)
    assert codes.shape == (1, 120, 3)
    assert len({tuple(c.tolist()) for c in codes[0]}) == 120  # every id is a distinct code
    # Feed each code's pre-image back: the bounded value of atanh-ed codes rounds to the same level.
    out = q(torch.randn(4, 50, 3) * 3)
    assert isinstance(out, QuantizerOutput)
    assert out.indices.min() >= 0 and out.indices.max() < 120
    assert torch.allclose(q.indices_to_codes(out.indices), out.codes, atol=1e-6)


def test_fsq_reaches_every_level_of_each_dimension():
    q = FSQ([8, 5])
    out = q(torch.linspace(-6, 6, 2000).view(1, -1, 1).repeat(1, 1, 2))
    digits = torch.stack([out.indices.flatten() % 8, out.indices.flatten() // 8 % 5])
    assert set(digits[0].tolist()) == set(range(8))
    assert set(digits[1].tolist()) == set(range(5))


def test_quantizers_quantize_in_float32_under_bf16_autocast():
    """Quantizer.forward turns autocast off: under bf16 autocast a VQ's nearest-code search (a matmul)
    would run in bf16 and pick other codes. Without the guard the indices differ (checked below by
    calling quantize directly under autocast); with it they equal a float32 run's."""
    from vtok.quantizers.vq import VQ

    torch.manual_seed(0)
    for q in (FSQ([8, 8, 8]), VQ(dim=8, codebook_size=4096).eval()):
        z = torch.randn(4, 256, q.dim)
        reference = q(z).indices
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = q(z)
        assert out.codes.dtype == torch.float32
        assert torch.equal(out.indices, reference)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what the guard prevents
        unguarded = q.quantize(z).indices
    assert not torch.equal(unguarded, reference)


def test_fsq_straight_through_gradient():
    q = FSQ([5, 5])
    z = torch.randn(2, 4, 2, requires_grad=True)
    q(z).codes.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_fsq_rejects_bad_levels():
    with pytest.raises(ValueError):
        FSQ([1, 5])


def test_vq_eval_round_trip_and_training_updates():
    torch.manual_seed(0)
    q = VQ(dim=4, codebook_size=16)
    z = torch.randn(3, 10, 4)
    q.eval()
    out = q(z)
    assert out.indices.shape == (3, 10)
    assert torch.allclose(q.indices_to_codes(out.indices), out.codes, atol=1e-6)
    before = q.codebook.clone()
    q.train()
    out = q(z)
    assert out.aux_loss > 0
    assert not torch.equal(before, q.codebook)  # EMA moved the codes
    assert torch.allclose(q.codebook.norm(dim=-1), torch.ones(16), atol=1e-5)


def test_vq_restarts_dead_codes():
    torch.manual_seed(0)
    q = VQ(dim=2, codebook_size=8, decay=0.5, dead_code_threshold=0.4).train()
    z = torch.tensor([[[1.0, 0.0]]]).repeat(1, 64, 1)  # every vector the same: 7 codes go unused
    for _ in range(5):
        q(z)
    # Dead codes were re-seeded from batch vectors, so they now sit on the data.
    assert (q.codebook @ torch.tensor([1.0, 0.0]) > 0.99).sum() >= 2


def test_vq_gradient_reaches_input():
    q = VQ(dim=4, codebook_size=8)
    z = torch.randn(2, 3, 4, requires_grad=True)
    out = q(z)
    (out.codes.sum() + out.aux_loss).backward()
    assert z.grad.abs().sum() > 0


def test_the_quantizer_owns_the_token_digit_split():
    """FSQ's code ids are its digits in mixed radix; Digits (what the prior, the coders and the LM use)
    splits and joins them the same way, on numpy and torch alike."""
    import numpy as np

    from vtok.quantizers.digits import Digits
    from vtok.quantizers.fsq import FSQ

    fsq = FSQ([8, 5, 5, 3])
    z = torch.randn(2, 7, 4) * 3
    out = fsq.quantize(z)
    digits = fsq.digits.split(out.indices)
    assert digits.shape == (2, 7, 4) and torch.equal(fsq.digits.join(digits), out.indices)
    # the digits are the rounded levels: codes = (digit - half) / half for each dimension
    half = torch.tensor([4, 2, 2, 1])
    assert torch.allclose(((digits - half) / half).float(), out.codes)
    ids = np.arange(fsq.codebook_size)
    split = Digits(fsq.symbol_alphabets()).split(ids)
    assert np.array_equal(split, fsq.digits.split(torch.from_numpy(ids)).numpy())
    assert np.array_equal(Digits([8, 5, 5, 3]).join(split), ids) and split.max(0).tolist() == [7, 4, 4, 2]
