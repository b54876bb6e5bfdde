"""Pruners against torch.nn.utils.prune (the independent reference), exact counts, nesting, schedules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn

from tickets.errors import TicketsError
from tickets.masks import Mask
from tickets.pruning import Schedule, magnitude_prune, random_like, random_prune, reverse_prune


def _modules(ties: bool = False, seed: int = 0) -> dict[str, nn.Module]:
    """A few layers of different shapes; with ``ties`` the weights take few distinct |values| (tie-breaking)."""
    torch.manual_seed(seed)
    mods = {"a": nn.Conv2d(3, 8, 3), "b": nn.Linear(50, 20), "c": nn.Conv1d(8, 4, 5), "d": nn.Linear(7, 3)}
    if ties:
        with torch.no_grad():
            for m in mods.values():
                m.weight.copy_(torch.randint(-4, 5, m.weight.shape).float() / 4)
    return mods


def _scores(mods):
    return {f"{k}.weight": m.weight.detach().clone() for k, m in mods.items()}


def _dense(mods) -> Mask:
    return Mask({f"{k}.weight": torch.ones_like(m.weight, dtype=torch.bool) for k, m in mods.items()})


def _torch_masks(mods) -> Mask:
    return Mask({f"{k}.weight": m.weight_mask.detach().clone() for k, m in mods.items()})


@pytest.mark.parametrize("ties", [False, True])
def test_global_magnitude_matches_torch_global_unstructured(ties):
    """Two rounds (the second on an already-pruned mask) select exactly what prune.global_unstructured selects."""
    mods = _modules(ties)
    scores = _scores(mods)
    params = [(m, "weight") for m in mods.values()]
    mask = _dense(mods)
    for sparsity in (0.3, 0.55, 0.8):
        new = magnitude_prune(scores, mask, sparsity)
        k = round(sparsity * mask.num_total) - mask.num_pruned
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=k)
        assert new.equal(_torch_masks(mods)), f"differs from torch at sparsity {sparsity}"
        assert new.num_pruned == round(sparsity * new.num_total)
        mask = new


@pytest.mark.parametrize("ties", [False, True])
def test_layerwise_magnitude_matches_torch_l1_unstructured(ties):
    mods = _modules(ties, seed=1)
    scores = _scores(mods)
    mask = _dense(mods)
    for sparsity in (0.25, 0.6):
        new = magnitude_prune(scores, mask, sparsity, scope="layerwise")
        for key, m in mods.items():
            name = f"{key}.weight"
            k = round(sparsity * m.weight.numel()) - int((~mask[name]).sum())
            prune.l1_unstructured(m, "weight", amount=k)
            assert torch.equal(new[name], m.weight_mask.bool()), name
            assert int((~new[name]).sum()) == round(sparsity * m.weight.numel())
        mask = new


@pytest.mark.parametrize("sparsity", [0.01, 0.1, 0.333, 0.5, 0.875, 0.99])
@pytest.mark.parametrize("method", ["magnitude", "reverse", "random"])
def test_exact_counts_and_nesting(sparsity, method):
    mods = _modules()
    scores = _scores(mods)
    start = random_prune(_dense(mods), 0.0, generator=torch.Generator().manual_seed(0))
    start["b.weight"][0, :5] = False  # an existing, irregular pruning (5 weights)
    if method == "magnitude":
        new = magnitude_prune(scores, start, sparsity)
    elif method == "reverse":
        new = reverse_prune(scores, start, sparsity)
    else:
        new = random_prune(start, sparsity, generator=torch.Generator().manual_seed(1))
    assert new.num_pruned == round(sparsity * new.num_total)
    for name, t in new.items():
        assert not (t & ~start[name]).any(), "pruning revived a pruned weight"
    assert start["a.weight"].all(), "input mask was modified"


def test_reverse_prunes_largest_and_magnitude_smallest():
    mods = _modules()
    scores = _scores(mods)
    flat = torch.cat([s.abs().reshape(-1) for s in scores.values()])
    for fn, largest in ((magnitude_prune, False), (reverse_prune, True)):
        mask = fn(scores, _dense(mods), 0.4)
        kept = torch.cat([scores[n].abs()[t] for n, t in mask.items()])
        pruned = torch.cat([scores[n].abs()[~t] for n, t in mask.items()])
        assert kept.numel() + pruned.numel() == flat.numel()
        if largest:
            assert pruned.min() >= kept.max()
        else:
            assert pruned.max() <= kept.min()


def test_random_prune_reproducible_and_uniform():
    mods = _modules()
    dense = _dense(mods)
    a = random_prune(dense, 0.5, generator=torch.Generator().manual_seed(3))
    b = random_prune(dense, 0.5, generator=torch.Generator().manual_seed(3))
    c = random_prune(dense, 0.5, generator=torch.Generator().manual_seed(4))
    assert a.equal(b) and not a.equal(c)
    # global random pruning spreads roughly evenly over tensors of different sizes
    per = a.per_tensor_sparsity()
    assert 0.35 < per["b.weight"] < 0.65 and 0.35 < per["a.weight"] < 0.65
    lw = random_prune(dense, 0.5, scope="layerwise", generator=torch.Generator().manual_seed(3))
    assert all(int((~t).sum()) == round(0.5 * t.numel()) for _, t in lw.items())


def test_random_like_keeps_per_tensor_density():
    mods = _modules()
    mask = magnitude_prune(_scores(mods), _dense(mods), 0.7)
    like = random_like(mask, generator=torch.Generator().manual_seed(0))
    assert like.names == mask.names
    for name, t in mask.items():
        assert like[name].shape == t.shape and int(like[name].sum()) == int(t.sum())
    assert like.iou(mask) < 0.5
    assert random_like(mask, torch.Generator().manual_seed(0)).equal(like)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "x"])
def test_sparsity_out_of_range(bad):
    mods = _modules()
    with pytest.raises(TicketsError, match="sparsity"):
        magnitude_prune(_scores(mods), _dense(mods), bad)
    with pytest.raises(TicketsError, match="sparsity"):
        random_prune(_dense(mods), bad)


def test_other_errors():
    mods = _modules()
    scores = _scores(mods)
    mask = magnitude_prune(scores, _dense(mods), 0.5)
    with pytest.raises(TicketsError, match="higher sparsity"):
        magnitude_prune(scores, mask, 0.3)
    with pytest.raises(TicketsError, match="scope"):
        magnitude_prune(scores, mask, 0.6, scope="per-layer")
    with pytest.raises(TicketsError, match="no score"):
        magnitude_prune({k: v for k, v in scores.items() if k != "a.weight"}, mask, 0.6)
    with pytest.raises(TicketsError, match="shape"):
        magnitude_prune({**scores, "d.weight": torch.ones(3)}, mask, 0.6)


# -- schedules -------------------------------------------------------------------------------------------------------


def test_schedules():
    assert Schedule().sparsities_list()[:4] == [0.2, 0.36, 0.488, 0.5904]
    assert len(Schedule().sparsities_list()) == 6
    assert Schedule("linear", rate=0.1, levels=9).sparsities_list() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert Schedule("explicit", sparsities=[0.5, 0.9]).sparsities_list() == [0.5, 0.9]
    assert Schedule("explicit", sparsities=(0.0, 0.5)).sparsities_list() == [0.0, 0.5]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kind="cosine"),
        dict(kind="geometric", rate=0.0),
        dict(kind="geometric", rate=1.0),
        dict(kind="geometric", levels=0),
        dict(kind="linear", rate=0.1, levels=10),
        dict(kind="explicit"),
        dict(kind="explicit", sparsities=(0.5, 0.5)),
        dict(kind="explicit", sparsities=(0.8, 0.5)),
        dict(kind="explicit", sparsities=(0.5, 1.0)),
        dict(kind="explicit", sparsities=(-0.1, 0.5)),
    ],
)
def test_schedule_errors(kwargs):
    with pytest.raises(TicketsError):
        Schedule(**kwargs)
