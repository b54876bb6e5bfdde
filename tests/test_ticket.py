"""Ticket files: round trips, bit packing, checksums, corrupt files, legacy torch.save formats, describe()."""

from __future__ import annotations

import json
import os

import pytest
import safetensors.torch
import torch
import torch.nn.utils.prune as prune
from safetensors import safe_open
from torch import nn

from tickets.errors import TicketsError
from tickets.masks import Mask
from tickets.pruning import random_prune
from tickets.ticket import FORMAT, Ticket, describe, load_ticket, save_ticket


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.fc1 = nn.Linear(54, 17)  # 918 weights: not a multiple of 8, exercises bit padding
        self.fc2 = nn.Linear(17, 3)


@pytest.fixture()
def net():
    torch.manual_seed(0)
    return Net()


def _mask(net, sparsity=0.7, seed=0) -> Mask:
    dense = Mask.ones_like(net, ["conv.weight", "fc1.weight", "fc2.weight"])
    return random_prune(dense, sparsity, generator=torch.Generator().manual_seed(seed))


META = {"model": "net", "method": "imp", "level": 3, "sparsity": 0.7, "seed": 0, "weights": "theta0",
        "prunable": {"preset": "all", "include": [], "exclude": []}, "head_policy": "fresh"}


def _header(path) -> tuple[int, dict]:
    data = open(path, "rb").read()
    n = int.from_bytes(data[:8], "little")
    return n, json.loads(data[8 : 8 + n])


# -- our format ------------------------------------------------------------------------------------------------------


def test_roundtrip(tmp_path, net):
    mask = _mask(net)
    path = tmp_path / "t.ticket"
    save_ticket(path, Ticket(mask, dict(META)))
    loaded = load_ticket(path)
    assert loaded.mask.equal(mask) and loaded.mask.names == mask.names
    assert loaded.weights is None
    for key, value in META.items():
        assert loaded.meta[key] == value
    assert loaded.meta["format"] == FORMAT and loaded.meta["format_version"] == 1
    assert loaded.meta["checksum"].startswith("sha256:")
    # saving what was loaded gives the same file content
    save_ticket(tmp_path / "again.ticket", loaded)
    assert load_ticket(tmp_path / "again.ticket").meta == loaded.meta


def test_layout_is_bitpacked_with_header_metadata(tmp_path, net):
    mask = _mask(net)
    path = tmp_path / "t.safetensors"
    save_ticket(path, Ticket(mask, dict(META)))
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        md = f.metadata()
        packed = f.get_tensor("mask::fc1.weight")
    assert keys == {"mask::conv.weight", "mask::fc1.weight", "mask::fc2.weight"}
    assert packed.dtype == torch.uint8 and packed.numel() == (918 + 7) // 8  # 1 bit per weight
    assert md["format"] == FORMAT and md["format_version"] == "1"
    assert json.loads(md["names"]) == mask.names
    assert json.loads(md["shapes"])["conv.weight"] == [6, 3, 3, 3]
    assert json.loads(md["meta.level"]) == 3 and json.loads(md["meta.prunable"])["preset"] == "all"
    assert os.path.getsize(path) < mask.num_total // 8 + 4096


def test_files_are_deterministic(tmp_path, net):
    """The same ticket gives the same bytes (run directories and resumes compare files)."""
    ticket = Ticket(_mask(net), dict(META), {"fc2.weight": net.fc2.weight.detach()})
    for i in range(3):
        save_ticket(tmp_path / f"{i}.ticket", ticket)
    assert (tmp_path / "0.ticket").read_bytes() == (tmp_path / "1.ticket").read_bytes() == (
        tmp_path / "2.ticket"
    ).read_bytes()


def test_weights_roundtrip(tmp_path, net):
    weights = {n: p.detach().clone() for n, p in net.named_parameters()}
    weights["fc2.weight"] = weights["fc2.weight"].to(torch.bfloat16)
    path = tmp_path / "rewound.ticket"
    save_ticket(path, Ticket(_mask(net), {"weights": "rewind:100"}, weights))
    loaded = load_ticket(path)
    assert set(loaded.weights) == set(weights)
    for n, w in weights.items():
        assert loaded.weights[n].dtype == w.dtype and torch.equal(loaded.weights[n], w)
    assert loaded.meta["weights"] == "rewind:100"


def test_atomic_overwrite_leaves_no_temp_files(tmp_path, net):
    path = tmp_path / "sub" / "t.ticket"
    save_ticket(path, Ticket(_mask(net, 0.5), {}))
    save_ticket(path, Ticket(_mask(net, 0.9), {}))
    assert load_ticket(path).mask.sparsity == pytest.approx(0.9, abs=1e-3)
    assert os.listdir(path.parent) == ["t.ticket"]
    # a failed write (unserialisable meta) leaves the old file intact and no temp file
    with pytest.raises(TicketsError, match="meta field 'bad'"):
        save_ticket(path, Ticket(_mask(net, 0.5), {"bad": object()}))
    assert load_ticket(path).mask.sparsity == pytest.approx(0.9, abs=1e-3)
    assert os.listdir(path.parent) == ["t.ticket"]


def test_flipped_mask_byte_fails_checksum(tmp_path, net):
    path = tmp_path / "t.ticket"
    save_ticket(path, Ticket(_mask(net), dict(META)))
    n, header = _header(path)
    start, _ = header["mask::fc1.weight"]["data_offsets"]
    data = bytearray(path.read_bytes())
    data[8 + n + start + 3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(TicketsError, match="checksum"):
        load_ticket(path)


def test_flipped_weight_byte_fails_checksum(tmp_path, net):
    path = tmp_path / "t.ticket"
    save_ticket(path, Ticket(_mask(net), {}, {"fc2.weight": net.fc2.weight.detach()}))
    n, header = _header(path)
    start, _ = header["weight::fc2.weight"]["data_offsets"]
    data = bytearray(path.read_bytes())
    data[8 + n + start] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(TicketsError, match="checksum"):
        load_ticket(path)


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
def test_truncated_file(tmp_path, net, keep):
    path = tmp_path / "t.ticket"
    save_ticket(path, Ticket(_mask(net), dict(META)))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(TicketsError, match="corrupt") as info:
        load_ticket(path)
    assert "\n" not in str(info.value)


def test_unknown_and_missing_files(tmp_path):
    with pytest.raises(TicketsError, match="not found"):
        load_ticket(tmp_path / "nope.ticket")
    empty = tmp_path / "empty.ticket"
    empty.write_bytes(b"")
    with pytest.raises(TicketsError, match="empty"):
        load_ticket(empty)
    junk = tmp_path / "junk.ticket"
    junk.write_bytes(b"hello, this is not a ticket at all")
    with pytest.raises(TicketsError, match="not a ticket"):
        load_ticket(junk)
    weights = tmp_path / "model.safetensors"  # values other than 0/1: model weights, not masks
    safetensors.torch.save_file({"fc.weight": torch.tensor([[0.5, -1.0], [0.0, 1.0]])}, str(weights))
    with pytest.raises(TicketsError, match="model weights, not masks") as info:
        load_ticket(weights)
    assert "'fc.weight'" in str(info.value) and "\n" not in str(info.value)


def test_newer_format_version_refused(tmp_path):
    path = tmp_path / "t.ticket"
    tensors = {"mask::w": torch.tensor([0xE0], dtype=torch.uint8)}
    md = {"format": FORMAT, "format_version": "99", "names": '["w"]', "shapes": '{"w": [3]}', "checksum": "x"}
    safetensors.torch.save_file(tensors, str(path), metadata=md)
    with pytest.raises(TicketsError, match="upgrade"):
        load_ticket(path)




@pytest.mark.parametrize("key", ["meta_checksum", "checksum"])
def test_a_missing_checksum_is_refused_not_skipped(tmp_path, net, key, edit_header):
    """A ticket file of ours carries both checksums (format_version 1 has both): without one, an edited header
    (here meta.sparsity 0.9 on a 0.7-sparse mask) used to load as if it were intact."""
    path = tmp_path / "t.safetensors"
    save_ticket(path, Ticket(_mask(net), dict(META)))
    edited = edit_header(path, lambda md: (md.pop(key), md.update({"meta.sparsity": "0.9"})))
    with pytest.raises(TicketsError, match=f"no {key} entry") as info:
        load_ticket(edited)
    assert "\n" not in str(info.value) and "re-copy" in str(info.value)
    # the intact file, and one whose edit is caught by the checksum that is there
    assert load_ticket(path).meta["sparsity"] == 0.7
    with pytest.raises(TicketsError, match="metadata checksum"):
        load_ticket(edit_header(path, lambda md: md.update({"meta.sparsity": "0.9"})))


def test_a_ticket_without_its_format_field_is_corrupt_not_model_weights(tmp_path, net, edit_header):
    path = tmp_path / "t.safetensors"
    save_ticket(path, Ticket(_mask(net), dict(META)))
    with pytest.raises(TicketsError, match="corrupt.*format field") as info:
        load_ticket(edit_header(path, lambda md: md.pop("format")))
    assert "weights" not in str(info.value)


def test_a_directory_names_the_tickets_in_it(tmp_path, net):
    """A run directory is not 'not found': the error says it is a directory and lists the ticket files to pass; a
    folder holding its one ticket under the usual name (a find level, save_pretrained, open_lth's mask.pth) reads."""
    run = tmp_path / "find-abc"
    for level, sparsity in ((0, 0.0), (1, 0.5)):
        save_ticket(run / f"level-{level:02d}" / "ticket.safetensors", Ticket(_mask(net, sparsity), {}))
    with pytest.raises(TicketsError) as info:
        load_ticket(run)
    text = str(info.value)
    assert "is a directory" in text and "not found" not in text and "\n" not in text
    assert str(run / "level-00" / "ticket.safetensors") in text and str(run / "level-01" / "ticket.safetensors") in text
    with pytest.raises(TicketsError, match="is a directory.*level-01/ticket.safetensors"):
        load_ticket(tmp_path)  # two levels down
    level = load_ticket(run / "level-01")
    assert level.source == run / "level-01" / "ticket.safetensors" and level.mask.equal(_mask(net, 0.5))
    lth = tmp_path / "lth"
    lth.mkdir()
    torch.save({n: t.int() for n, t in _mask(net).items()}, lth / "mask.pth")
    assert load_ticket(lth).mask.equal(_mask(net))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TicketsError, match="directory and holds no ticket file"):
        load_ticket(tmp_path / "empty")


def test_save_onto_a_directory_names_it(tmp_path, net):
    """Writing a ticket where a directory is: one line naming that path (the rename used to fail naming a
    temporary file), nothing left behind."""
    from tickets.fileio import atomic_write_text

    target = tmp_path / "out"
    target.mkdir()
    for write in (lambda: save_ticket(target, Ticket(_mask(net), {})), lambda: atomic_write_text(target, "x")):
        with pytest.raises(TicketsError, match="is a directory") as info:
            write()
        assert str(target) in str(info.value) and ".tmp" not in str(info.value)
        assert isinstance(info.value, IsADirectoryError)  # still an OSError for callers catching those
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(target) == []


class _Custom:
    """Not a tensor: weights_only loading must refuse it."""


# -- legacy files ----------------------------------------------------------------------------------------------------


def _pruned_net(net) -> Net:
    """Prune `net` with torch's utilities, leaving weight_orig / weight_mask in its state dict."""
    params = [(net.conv, "weight"), (net.fc1, "weight"), (net.fc2, "weight")]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.6)
    return net


def _expected(net) -> dict[str, torch.Tensor]:
    return {f"{m}.weight": getattr(net, m).weight_mask.bool() for m in ("conv", "fc1", "fc2")}


@pytest.mark.parametrize("layout", ["masks-only", "state-dict", "dataparallel-checkpoint", "legacy-pickle"])
def test_pytorch_prune_files(tmp_path, net, layout):
    net = _pruned_net(net)
    sd = net.state_dict()
    if layout == "masks-only":  # BERT-Tickets style: only the *_mask entries
        obj, kwargs = {k: v for k, v in sd.items() if k.endswith("_mask")}, {}
    elif layout == "state-dict":  # weight_orig, weight_mask, biases together
        obj, kwargs = sd, {}
    elif layout == "dataparallel-checkpoint":  # CV_LTH style: nested, with module. prefix and other entries
        obj, kwargs = {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3, "best_acc": 91.5}, {}
    else:
        obj, kwargs = {k: v for k, v in sd.items() if k.endswith("_mask")}, {"_use_new_zipfile_serialization": False}
    path = tmp_path / "mask.safetensors"  # misleading extension: detection is by content
    torch.save(obj, path, **kwargs)
    ticket = load_ticket(path)
    assert ticket.meta["format"] == "pytorch-prune"
    assert ticket.mask.equal(Mask(_expected(net)))
    assert ticket.mask.num_pruned == round(0.6 * ticket.mask.num_total)
    # converting to our format keeps the origin
    save_ticket(tmp_path / "converted.ticket", ticket)
    converted = load_ticket(tmp_path / "converted.ticket")
    assert converted.mask.equal(ticket.mask) and converted.meta["converted_from"] == "pytorch-prune"


def test_open_lth_mask(tmp_path, net):
    # open_lth's Mask.save writes {parameter name: mask.int()} with torch.save to mask.pth
    mask = _mask(net)
    path = tmp_path / "mask.pth"
    torch.save({name: t.cpu().int() for name, t in mask.items()}, path)
    ticket = load_ticket(path)
    assert ticket.meta["format"] == "open_lth"
    assert ticket.mask.equal(mask)
    ticket.mask.check(net)


def test_legacy_errors(tmp_path, net):
    weights = tmp_path / "weights.pth"
    torch.save(net.state_dict(), weights)
    with pytest.raises(TicketsError, match="not a\\s+mask|values other than 0/1"):
        load_ticket(weights)

    no_masks = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "lr": 0.1}, no_masks)
    with pytest.raises(TicketsError, match="no masks"):
        load_ticket(no_masks)

    unsafe = tmp_path / "unsafe.pth"
    torch.save({"fc.weight_mask": torch.ones(2), "obj": _Custom()}, unsafe)
    with pytest.raises(TicketsError, match="weights_only") as info:
        load_ticket(unsafe)
    assert "\n" not in str(info.value)

    good = tmp_path / "good.pth"
    torch.save({"fc.weight_mask": torch.ones(4)}, good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(TicketsError, match="truncated or corrupt"):
        load_ticket(truncated)


# -- describe --------------------------------------------------------------------------------------------------------


def test_describe(tmp_path, net):
    mask = _mask(net)
    save_ticket(tmp_path / "t.ticket", Ticket(mask, dict(META)))
    text = describe(load_ticket(tmp_path / "t.ticket"), net)
    assert "model" in text and "imp" in text and "sha256:" in text
    assert "fc1.weight" in text and "17x54" in text
    assert f"sparsity over the prunable set (3 tensors, {mask.num_total} weights)" in text
    model_total = sum(p.numel() for p in net.parameters())
    assert f"all parameters of the model ({model_total} parameters)" in text
    assert f"{mask.num_pruned / model_total:.4f}" in text
    assert "all parameters" not in describe(Ticket(mask, {}))


def test_describe_shows_the_masks_sparsity_not_only_the_recorded_one(net):
    mask = _mask(net)
    line = next(l for l in describe(Ticket(mask, {**META, "sparsity": 0.9})).splitlines() if l.startswith("sparsity "))
    assert json.dumps(mask.sparsity) in line and "the file records 0.9" in line
    line = next(l for l in describe(Ticket(mask, dict(META))).splitlines() if l.startswith("sparsity "))
    assert json.dumps(mask.sparsity) in line and "records" not in line  # 0.7 is the mask's, to rounding
