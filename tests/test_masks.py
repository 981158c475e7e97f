import pytest
import torch

from pruner_zero.errors import ConfigError
from pruner_zero.masks import (Structure, lowest_per_row, make_mask, nm_mask, parse_structure,
                               unstructured_mask)


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.7, 0.93])
def test_row_mask_prunes_exact_count_per_row_and_lowest_scores(sparsity):
    torch.manual_seed(0)
    scores = torch.rand(17, 40)
    mask = unstructured_mask(scores, sparsity, "row")
    k = int(40 * sparsity)
    assert (mask.sum(dim=1) == k).all()
    # every pruned score is <= every kept score in its row
    for r in range(17):
        assert scores[r][mask[r]].max() <= scores[r][~mask[r]].min()


def test_layer_mask_prunes_exact_count_and_can_be_uneven_across_rows():
    torch.manual_seed(1)
    scores = torch.rand(8, 50)
    scores[0] *= 0.01  # row 0 has all the small scores
    mask = unstructured_mask(scores, 0.5, "layer")
    assert int(mask.sum()) == int(scores.numel() * 0.5)
    assert mask[0].all()
    assert scores[mask].max() <= scores[~mask].min()


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
def test_nm_mask_keeps_n_of_every_m(n, m):
    torch.manual_seed(2)
    scores = torch.rand(6, 32)
    mask = nm_mask(scores, n, m)
    groups = mask.view(6, 32 // m, m)
    assert (groups.sum(dim=2) == m - n).all()
    kept_min = scores.view(6, -1, m).masked_fill(groups, float("inf")).min(dim=2).values
    pruned_max = scores.view(6, -1, m).masked_fill(~groups, -float("inf")).max(dim=2).values
    assert (pruned_max <= kept_min).all()


def test_ties_are_broken_reproducibly():
    scores = torch.ones(3, 10)
    a = make_mask(scores, Structure(0.5))
    b = make_mask(scores.clone(), Structure(0.5))
    assert torch.equal(a, b) and int(a.sum()) == 15


def test_the_row_mask_is_the_stable_sorts_first_k_also_with_ties_and_signed_zeros():
    """The selection (kthvalue, or numpy's partition on the CPU) prunes exactly the weights a
    stable sort's first k are, ties broken by position, on random scores, many-way ties, -0.0
    beside 0.0, rows with and without ties in one layer, each float type, and k = 0 or all."""
    g = torch.Generator().manual_seed(5)
    mixed = torch.rand(300, 64, generator=g)  # rows split among threads; some rows tied
    mixed[::7] = torch.randint(0, 3, (43, 64), generator=g).float()
    cases = [torch.rand(9, 64, generator=g), torch.randint(0, 3, (9, 64), generator=g).float(),
             torch.zeros(4, 16), torch.tensor([[0.0, -0.0, 1.0, -0.0, 0.0, 2.0, -0.0, 0.0]]),
             mixed, mixed.double(), mixed.half(), mixed.bfloat16()]
    for scores in cases:
        for k in range(0, scores.shape[1] + 1, max(1, scores.shape[1] // 7)):
            by_sort = torch.zeros_like(scores, dtype=torch.bool)
            by_sort.scatter_(1, torch.sort(scores, dim=1, stable=True).indices[:, :k], True)
            sparsity = k / scores.shape[1]
            if 0 < sparsity < 1:
                assert torch.equal(unstructured_mask(scores, sparsity, "row"), by_sort), k
            if k > 0:
                assert torch.equal(lowest_per_row(scores, k), by_sort), k


@pytest.mark.parametrize("structure,sparsity,msg", [
    ("unstructured", 0.0, "strictly between 0 and 1"),
    ("unstructured", 1.0, "strictly between 0 and 1"),
    ("unstructured", -0.2, "strictly between 0 and 1"),
    ("4:4", None, "0 < N < M"),
    ("5:4", None, "0 < N < M"),
    ("2-4", None, "N:M"),
    ("\u00b2:\u2074", None, "N:M"),  # superscript digits pass str.isdigit, not int()
    ("\uff12:\uff14", None, "N:M"),  # full-width digits
    ("2:4", 0.7, "implies sparsity 0.5"),
])
def test_bad_structure_is_a_config_error(structure, sparsity, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_structure(structure, sparsity)


def test_nm_with_layer_comparison_is_refused():
    with pytest.raises(ConfigError, match="unstructured sparsity only"):
        parse_structure("2:4", None, "layer")


def test_nm_needs_divisible_width():
    with pytest.raises(ConfigError, match="divisible by 4"):
        nm_mask(torch.rand(2, 6), 2, 4)
