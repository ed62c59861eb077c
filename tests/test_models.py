import pytest
import torch

import vtok
from vtok.models.blocks import zigzag_dct_basis
from vtok.registry import create_model


@pytest.mark.slow
@pytest.mark.parametrize("name", vtok.list_tokenizers())
def test_every_registered_model_shapes_finite_and_all_parameters_learn(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    s, k = model.image_size, model.num_tokens
    x = torch.rand(2, 3, s, s) * 2 - 1
    out = model(x, keep=torch.tensor([k, max(1, k // 2)]))
    assert out.recon.shape == (2, 3, s, s)
    assert out.indices.shape == (2, k)
    assert torch.isfinite(out.recon).all()
    (out.recon.square().mean() + out.aux_loss).backward()
    # The transformers start as zero residuals; a second step reaches the layers behind them.
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.step()
    opt.zero_grad()
    out = model(x, keep=torch.tensor([k, 1]))
    (out.recon.square().mean() + out.aux_loss).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, f"zero gradient for {dead[:5]}"


@pytest.mark.parametrize("name", ["ordered1d-tiny", "grid2d-tiny"])
def test_decode_of_prefix_equals_masked_forward(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.rand(2, 3, model.image_size, model.image_size) * 2 - 1
    with torch.no_grad():
        q = model.encode(x)
        for k in (1, 3, model.num_tokens):
            masked = model.decode_codes(q.codes, torch.full((2,), k))
            # straight-through codes differ from indices_to_codes by float rounding only
            assert torch.allclose(model.decode(q.indices[:, :k]), masked, atol=1e-3)


def test_tokens_past_the_prefix_do_not_change_the_decoding():
    torch.manual_seed(0)
    model = create_model("ordered1d-tiny").eval()
    ids = torch.randint(0, model.codebook_size, (1, model.num_tokens))
    other = ids.clone()
    other[:, 3:] = torch.randint(0, model.codebook_size, (1, model.num_tokens - 3))
    keep = torch.tensor([3])
    codes, other_codes = model.quantizer.indices_to_codes(ids), model.quantizer.indices_to_codes(other)
    with torch.no_grad():  # the full sequences differ past the prefix; decoding the prefix must not see it
        assert not torch.equal(
            model.decode_codes(codes, torch.tensor([8])), model.decode_codes(other_codes, torch.tensor([8]))
        )
        assert torch.equal(model.decode_codes(codes, keep), model.decode_codes(other_codes, keep))
        assert torch.equal(model.decode(ids[:, :3]), model.decode_codes(codes, keep))


def test_zigzag_dct_basis_is_orthonormal_and_starts_with_dc():
    b = zigzag_dct_basis(8, 64)
    assert torch.allclose(b @ b.t(), torch.eye(64), atol=1e-5)
    assert torch.allclose(b[0], torch.full((64,), 1 / 8), atol=1e-6)


def test_unknown_override_is_a_config_error():
    with pytest.raises(vtok.ConfigError, match="num_tokenz"):
        vtok.create_tokenizer("ordered1d-tiny", num_tokenz=3)
    with pytest.raises(vtok.ConfigError, match="unknown tokenizer"):
        vtok.create_tokenizer("nope")


def test_cell_deblock_removes_the_pixel_shuffle_grid_without_weights():
    """The shipped default decodes through a CellDeblock (config deblock 0.25): it owns no weights
    (the same weights id as without it), and on real photos it brings the cell-edge gradient ratio
    to within 0.1 of the originals' while PSNR does not fall."""
    from vtok.demo import sample_images
    from vtok.metrics.pixel import psnr
    from vtok.metrics.quality import block_edge_ratio
    from vtok.models.blocks import CellDeblock

    with_filter = vtok.load("default")
    assert with_filter.model.config.deblock == 0.25
    plain = vtok.create_tokenizer("ordered1d-small", **{**vtok.load("default").config_dict()["config"], "deblock": 0.0})
    plain.model.load_state_dict(with_filter.model.state_dict(), strict=True)
    assert plain.weights_id() == with_filter.weights_id()
    assert not any("deblock" in k for k in with_filter.model.state_dict())
    x = with_filter.preprocess([str(p) for p in sample_images()])
    tokens = with_filter.encode(x)
    a, b = plain.decode(tokens), with_filter.decode(tokens)
    assert block_edge_ratio(a, 4) > 1.2 and block_edge_ratio(b, 4) < block_edge_ratio(x, 4) + 0.1
    assert float(psnr(b, x).mean()) >= float(psnr(a, x).mean()) - 0.01
    # differentiable, and the identity on smooth ramps it has nothing to smooth
    y = torch.rand(1, 3, 16, 16, requires_grad=True)
    CellDeblock(4, 0.25)(y).sum().backward()
    assert y.grad is not None
    ramp = torch.linspace(0, 1, 16).expand(1, 3, 16, 16)
    assert torch.allclose(CellDeblock(4, 0.25)(ramp), ramp, atol=1e-6)
    for bad in ({"deblock": 0.7}, {"deblock": 0.2, "patch": 1}, {"deblock": True}):
        with pytest.raises(vtok.ConfigError, match="deblock"):
            vtok.create_tokenizer("ordered1d-tiny", **bad)
