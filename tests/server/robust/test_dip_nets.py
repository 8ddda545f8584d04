"""The grouped DIP skip network: shapes, per-group independence, parameter packing, seeded init."""

from __future__ import annotations

import pytest
import torch

from server.robust.dip_nets import (
    SkipNet,
    group_cat,
    grouped_to_stacked,
    init_params,
    stack_params,
    stacked_to_grouped,
)

CHANNELS, SKIP, IN_CH = (4, 8), (2, 2), 6


def load(net: SkipNet, grouped: dict[str, torch.Tensor]) -> SkipNet:
    """Copy grouped parameters into ``net``."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(grouped[name])
    return net


def test_output_shape_and_range():
    net = SkipNet(CHANNELS, SKIP, IN_CH, groups=3)
    out = net(torch.rand(1, 3 * IN_CH, 16, 16))
    assert out.shape == (1, 9, 16, 16)
    assert out.min() > 0 and out.max() < 1


def test_paper_network_size():
    params = init_params((8, 16, 32, 64, 128), (0, 0, 0, 4, 4), 32, seed=0)
    assert 500_000 < sum(p.numel() for p in params.values()) < 650_000


def test_rejects_mismatched_levels():
    with pytest.raises(ValueError):
        SkipNet((4, 8), (0,), IN_CH)


def test_group_cat_keeps_each_groups_channels_together():
    a = torch.arange(4.0).view(1, 4, 1, 1)  # 2 groups x 2 channels
    b = torch.arange(10.0, 16.0).view(1, 6, 1, 1)  # 2 groups x 3 channels
    assert group_cat(a, b, 2).flatten().tolist() == [0, 1, 10, 11, 12, 2, 3, 13, 14, 15]


def test_grouped_forward_equals_separate_networks():
    states = [init_params(CHANNELS, SKIP, IN_CH, seed=s) for s in range(3)]
    grouped = load(SkipNet(CHANNELS, SKIP, IN_CH, groups=3).double(), stack_params(states))
    z = torch.rand(3, IN_CH, 16, 16, dtype=torch.float64)
    together = grouped(z.reshape(1, -1, 16, 16)).view(3, 3, 16, 16)
    for i, state in enumerate(states):
        alone = load(SkipNet(CHANNELS, SKIP, IN_CH).double(), state)(z[i : i + 1])
        torch.testing.assert_close(together[i : i + 1], alone, rtol=0, atol=1e-12)


def test_stacked_and_grouped_round_trip():
    states = [init_params(CHANNELS, SKIP, IN_CH, seed=s) for s in range(2)]
    grouped = stack_params(states)
    stacked = grouped_to_stacked(grouped, 2)
    for name, t in stacked.items():
        assert torch.equal(t[1], states[1][name])
    assert all(torch.equal(stacked_to_grouped(stacked)[k], v) for k, v in grouped.items())


def test_init_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = init_params(CHANNELS, SKIP, IN_CH, seed=5)
    assert torch.equal(torch.rand(1), before)
    b = init_params(CHANNELS, SKIP, IN_CH, seed=5)
    c = init_params(CHANNELS, SKIP, IN_CH, seed=6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
