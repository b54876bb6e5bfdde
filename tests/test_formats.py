"""Mask and checkpoint files people have (issue 13 §3, issue 16 §4): export to and read back torch.nn.utils.prune,
open_lth and NNI layouts; wrapper prefixes; masks covering the head; legacy masks without a model; models carrying
prune reparametrisations; pre-sparsified checkpoints; `tickets export` of the model (masked / compact, safetensors /
ONNX / pt2); Task.from_hf_dataset against the GLUE loader."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from tickets.cli import main
from tickets.errors import TicketsError
from tickets.masks import Mask, PrunableSet
from tickets.ticket import Ticket, load_ticket, save_ticket

FAST = ["--epochs", "1", "--train-size", "200", "--device", "cpu", "--quiet", "--batch-size", "64"]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc1 = nn.Linear(16, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.fc1(self.conv(x).mean((2, 3)).repeat(1, 4))))


def _net(seed=0) -> Net:
    torch.manual_seed(seed)
    return Net()


def _random_mask(model: nn.Module, names, seed=0, keep=0.5) -> Mask:
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    return Mask({n: torch.rand(params[n].shape, generator=g) < keep for n in names})


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *words):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tickets: error:"), err
    for w in words:
        assert w in lines[0], (w, lines[0])


# --------------------------------------------------------------------------------------------------------------
# export --to: torch-prune, open-lth, nni
# --------------------------------------------------------------------------------------------------------------


def test_torch_prune_export_round_trips_through_custom_from_mask(tmp_path, capsys):
    net = _net()
    names = ["conv.weight", "fc1.weight", "fc1.bias"]
    mask = _random_mask(net, names)
    save_ticket(tmp_path / "t.safetensors", Ticket(mask, {"model": "custom"}))
    code, out, err = run(capsys, "export", tmp_path / "t.safetensors", "--to", "torch-prune", "--out",
                         tmp_path / "prune.pt")
    assert code == 0, err
    state = torch.load(tmp_path / "prune.pt", weights_only=True)
    assert sorted(state) == ["conv.weight_mask", "fc1.bias_mask", "fc1.weight_mask"]
    fresh = _net(seed=1)  # another model of the architecture: PyTorch's own utility applies the file
    before = {n: p.detach().clone() for n, p in fresh.named_parameters()}
    for key, value in state.items():
        module, _, tensor = key[: -len("_mask")].rpartition(".")
        prune.custom_from_mask(fresh.get_submodule(module), tensor, value)
    for name in names:
        module, _, tensor = name.rpartition(".")
        m = fresh.get_submodule(module)
        assert torch.equal(getattr(m, f"{tensor}_mask").bool(), mask[name])  # prune's buffer is our mask
        assert torch.equal(getattr(m, tensor), before[name] * mask[name])  # and the weight it computes
    # the pruned model's own state dict (weight_orig + weight_mask) reads back as the same ticket
    torch.save(fresh.state_dict(), tmp_path / "pruned_state.pt")
    assert load_ticket(tmp_path / "pruned_state.pt").mask.equal(mask)
    assert load_ticket(tmp_path / "prune.pt").mask.equal(mask)


def test_open_lth_export_is_what_mask_save_writes(tmp_path, capsys):
    net = _net()
    mask = _random_mask(net, ["conv.weight", "fc1.weight", "fc.weight"], seed=2)
    save_ticket(tmp_path / "t.safetensors", Ticket(mask, {}))
    code, _, err = run(capsys, "export", tmp_path / "t.safetensors", "--to", "open-lth", "--out", tmp_path / "lth")
    assert code == 0, err
    raw = torch.load(tmp_path / "lth" / "mask.pth", weights_only=True)
    assert list(raw) == mask.names
    for name, t in raw.items():  # open_lth's Mask.save: {name: v.cpu().int()}, entries 0 or 1
        assert t.dtype == torch.int32 and torch.equal(t, mask[name].int())
    report = json.loads((tmp_path / "lth" / "sparsity_report.json").read_text())
    assert report == {"total": float(mask.num_total), "unpruned": float(mask.num_kept)}
    back = load_ticket(tmp_path / "lth" / "mask.pth")
    assert back.meta["format"] == "open_lth" and back.mask.equal(mask)


def test_nni_masks_read_and_written(tmp_path, capsys):
    net = _net()
    mask = _random_mask(net, ["conv.weight", "fc1.weight"], seed=3)
    save_ticket(tmp_path / "t.safetensors", Ticket(mask, {}))
    code, _, err = run(capsys, "export", tmp_path / "t.safetensors", "--to", "nni", "--out", tmp_path / "nni.pth")
    assert code == 0, err
    raw = torch.load(tmp_path / "nni.pth", weights_only=True)
    assert set(raw) == {"conv", "fc1"} and set(raw["conv"]) == {"weight"}
    assert torch.equal(raw["fc1"]["weight"], mask["fc1.weight"].float())
    back = load_ticket(tmp_path / "nni.pth")
    assert back.meta["format"] == "nni" and back.mask.equal(mask)
    # as NNI 2.x's export_model(mask_path=...) saves it: bias masks, None where a layer has none
    nni = {"conv": {"weight": mask["conv.weight"].float(), "bias": None},
           "fc1": {"weight": mask["fc1.weight"].float(), "bias": torch.tensor([1.0, 0, 1, 1, 1, 1, 1, 0])}}
    torch.save(nni, tmp_path / "nni2.pth")
    read = load_ticket(tmp_path / "nni2.pth").mask
    assert read.names == ["conv.weight", "fc1.weight", "fc1.bias"]
    assert read["fc1.bias"].tolist() == [True, False, True, True, True, True, True, False]
    read.check(net)


def test_export_flag_errors(tmp_path, capsys):
    save_ticket(tmp_path / "t.safetensors", Ticket(_random_mask(_net(), ["fc1.weight"]), {}))
    code, _, err = run(capsys, "export", tmp_path / "t.safetensors", "--to", "nni", "--compact", "--out", tmp_path / "x")
    one_line_error(code, err, "--to", "drop")
    code, _, err = run(capsys, "export", tmp_path / "t.safetensors", "--out", tmp_path / "x")
    one_line_error(code, err, "records no model", "--model")


def test_export_onto_an_existing_directory_names_it(tmp_path, capsys):
    """`--out DIR` for a one-file format used to fail naming a temporary file in DIR's parent."""
    save_ticket(tmp_path / "t.safetensors", Ticket(_random_mask(_net(), ["fc1.weight"]), {}))
    out = tmp_path / "masks"
    out.mkdir()
    for fmt in ("torch-prune", "nni"):
        code, _, err = run(capsys, "export", tmp_path / "t.safetensors", "--to", fmt, "--out", out)
        one_line_error(code, err, f"--out {out} is a directory", "give a file name")
        assert ".tmp" not in err
    assert not list(out.iterdir()) and sorted(p.name for p in tmp_path.iterdir()) == ["masks", "t.safetensors"]
    # open-lth writes a folder: an existing directory receives mask.pth, whatever its name
    (tmp_path / "lth.pth").mkdir()
    code, _, err = run(capsys, "export", tmp_path / "t.safetensors", "--to", "open-lth", "--out", tmp_path / "lth.pth")
    assert code == 0, err
    assert load_ticket(tmp_path / "lth.pth" / "mask.pth").mask.equal(load_ticket(tmp_path / "t.safetensors").mask)


# --------------------------------------------------------------------------------------------------------------
# mask files of other tools saved as safetensors
# --------------------------------------------------------------------------------------------------------------


def _dataparallel_pruned_state() -> tuple[dict[str, torch.Tensor], Mask]:
    """The state dict of a DataParallel model pruned with torch.nn.utils.prune: module.conv.weight_orig,
    module.conv.weight_mask, biases, … and the mask it holds."""
    net = _net()
    prune.l1_unstructured(net.conv, "weight", amount=0.5)
    prune.random_unstructured(net.fc1, "weight", amount=0.3)
    state = {f"module.{k}": v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    return state, Mask({"conv.weight": net.conv.weight_mask.bool(), "fc1.weight": net.fc1.weight_mask.bool()})


@pytest.mark.parametrize("layout", ["prune-state-dict", "prune-masks-only", "plain-bool", "plain-uint8",
                                    "plain-float"])
def test_safetensors_mask_files_read_like_their_torch_save_twins(tmp_path, layout):
    from safetensors.torch import save_file

    state, expected = _dataparallel_pruned_state()
    if layout == "prune-state-dict":
        obj = state
    elif layout == "prune-masks-only":
        obj = {k: v for k, v in state.items() if k.endswith("_mask")}
    else:  # a plain {name: mask} dict saved from the DataParallel model: names keep their module. prefix
        dtype = {"plain-bool": torch.bool, "plain-uint8": torch.uint8, "plain-float": torch.float32}[layout]
        obj = {f"module.{n}": t.to(dtype).contiguous() for n, t in expected.items()}
    save_file(obj, str(tmp_path / "masks.safetensors"))
    torch.save(obj, tmp_path / "masks.pt")
    st, pt = load_ticket(tmp_path / "masks.safetensors"), load_ticket(tmp_path / "masks.pt")
    assert sorted(st.mask.names) == sorted(pt.mask.names)
    assert all(torch.equal(st.mask[n], pt.mask[n]) for n in pt.mask.names)
    assert st.meta["format"] == pt.meta["format"] and st.meta["sparsity"] == pytest.approx(pt.meta["sparsity"])
    # the same order, so the same checksum (it names the mask in run hashes), at every load
    again = [load_ticket(tmp_path / "masks.safetensors") for _ in range(3)]
    assert all(t.mask.names == st.mask.names and t.meta["checksum"] == st.meta["checksum"] for t in again)
    # and the same names where it meets the model (module. resolved, as for the torch.save file)
    model = _net()
    assert st.fit(model, head="fc").equal(expected) and pt.fit(model, head="fc").equal(expected)


def test_safetensors_weights_are_called_weights_and_bad_files_one_line(tmp_path, capsys):
    from safetensors.torch import save_file

    state, _ = _dataparallel_pruned_state()
    weights = {k: v for k, v in state.items() if not k.endswith("_mask")}
    save_file(weights, str(tmp_path / "weights.safetensors"))
    code, _, err = run(capsys, "inspect", tmp_path / "weights.safetensors")
    one_line_error(code, err, "model weights, not masks", "ticket-from-weights")
    torch.save(weights, tmp_path / "weights.pt")  # the torch.save twin says the same
    code, _, err = run(capsys, "inspect", tmp_path / "weights.pt")
    one_line_error(code, err, "model weights, not masks")
    save_file({}, str(tmp_path / "nothing.safetensors"), metadata={"format": "pt"})
    code, _, err = run(capsys, "inspect", tmp_path / "nothing.safetensors")
    one_line_error(code, err, "holds no masks")


# --------------------------------------------------------------------------------------------------------------
# a ticket meets a model: wrapper prefixes, head entries, legacy masks without a model
# --------------------------------------------------------------------------------------------------------------


def test_wrapper_prefixes_resolve_and_are_announced(caplog):
    net = _net()
    mask = _random_mask(net, ["conv.weight", "fc1.weight"])
    for prefix in ("module.", "model.", "module.model."):
        renamed = Mask({prefix + n: t for n, t in mask.items()})
        with caplog.at_level(logging.WARNING, logger="tickets"):
            caplog.clear()
            fitted = Ticket(renamed, {}).fit(net)
        assert fitted.equal(mask)
        assert any(repr(prefix) in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]

    class Wrapped(nn.Module):  # the model wraps the network the mask was drawn on: the prefix is added
        def __init__(self):
            super().__init__()
            self.model = net

    assert Ticket(mask, {}).fit(Wrapped()).equal(Mask({"model." + n: t for n, t in mask.items()}))

    class Twins(nn.Module):  # two copies of the network: which one the mask means is ambiguous
        def __init__(self):
            super().__init__()
            self.student, self.teacher = _net(), _net()

    with pytest.raises(TicketsError) as info:
        Ticket(mask, {}).fit(Twins())
    text = str(info.value)
    assert "\n" not in text and "'student.'" in text and "'teacher.'" in text and "ambiguous" in text


def test_head_entries_are_ignored_even_with_another_label_count(caplog):
    net = _net()
    names = ["conv.weight", "fc1.weight"]
    body = _random_mask(net, names)
    with_head = Mask({**dict(body.items()), "fc.weight": torch.ones(10, 8, dtype=torch.bool)})  # 10 labels, not 3
    with pytest.raises(TicketsError, match="another architecture"):
        with_head.check(net)  # without the head rule this is the error users got
    with caplog.at_level(logging.WARNING, logger="tickets"):
        fitted = Ticket(with_head, {}).fit(net, head=["fc"])
    assert fitted.equal(body)
    assert any("task head" in r.getMessage() and "fc.weight" in r.getMessage() for r in caplog.records)
    with pytest.raises(TicketsError, match="only the task head"):
        Ticket(Mask({"fc.weight": torch.ones(3, 8, dtype=torch.bool)}), {}).fit(net, head="fc")


def _lightning_lth_mask(tmp_path: Path) -> tuple[Path, Mask]:
    """An open_lth-style mask.pth over small-cnn with a Lightning 'model.' prefix, covering the 10-way head."""
    from tickets.models import load_model

    spec = load_model("small-cnn")
    names = [n for n, p in spec.module.named_parameters() if n.endswith("weight") and p.dim() > 1]
    assert "head.weight" in names
    mask = _random_mask(spec.module, names, seed=4)
    torch.save({f"model.{n}": t.int() for n, t in mask.items()}, tmp_path / "mask.pth")
    return tmp_path / "mask.pth", mask


def test_legacy_mask_transfer_needs_model_then_resolves_prefix_and_head(tmp_path, capsys):
    path, mask = _lightning_lth_mask(tmp_path)
    code, _, err = run(capsys, "transfer", "--ticket", path, "--task", "digits-0-4", "--out", tmp_path, *FAST)
    one_line_error(code, err, "records no model", "--model")
    # with --model: 'model.' stripped, the 10-way head entry ignored on the 5-way task, the rest enforced
    code, out, err = run(capsys, "transfer", "--ticket", path, "--model", "small-cnn", "--task", "digits-0-4",
                         "--out", tmp_path, "--save-weights", *FAST[:-3], "--batch-size", "64", "--device", "cpu")
    assert code == 0, err
    assert "'model.'" in err and "task head" in err
    from safetensors.torch import load_file

    weights = load_file(next(tmp_path.glob("transfer-*/model.safetensors")))
    assert weights["head.weight"].shape == (5, 64) and bool((weights["head.weight"] != 0).all())
    body = [n for n in mask.names if n != "head.weight"]
    assert sum(int((weights[n][~mask[n]] != 0).sum()) for n in body) == 0
    expected = sum(mask[n].numel() - int(mask[n].sum()) for n in body) / sum(mask[n].numel() for n in body)
    assert f"sparsity {expected:.2%}" in out


def test_eval_fits_a_prefixed_ticket(tmp_path, capsys):
    from safetensors.torch import save_file

    from tickets.models import load_model

    path, mask = _lightning_lth_mask(tmp_path)
    save_file({k: v.contiguous() for k, v in load_model("small-cnn").module.state_dict().items()},
              str(tmp_path / "w.safetensors"))
    code, out, err = run(capsys, "eval", "--model", "small-cnn", "--task", "digits", "--ticket", path, "--limit", 50,
                         "--device", "cpu", "--weights", tmp_path / "w.safetensors")
    assert code == 0, err
    assert "'model.'" in err and "task head" in err
    body = [n for n in mask.names if n != "head.weight"]
    expected = sum(mask[n].numel() - int(mask[n].sum()) for n in body) / sum(mask[n].numel() for n in body)
    assert f"{expected:.2%} sparse" in out


def test_legacy_tickets_get_the_checksum_our_format_gives_them(tmp_path):
    path, _ = _lightning_lth_mask(tmp_path)
    legacy = load_ticket(path)
    save_ticket(tmp_path / "ours.safetensors", legacy)
    assert load_ticket(tmp_path / "ours.safetensors").meta["checksum"] == legacy.meta["checksum"]
    other = {k: 1 - v for k, v in torch.load(path, weights_only=True).items()}  # same sparsity, other mask
    torch.save(other, tmp_path / "other.pth")
    assert load_ticket(tmp_path / "other.pth").meta["checksum"] != legacy.meta["checksum"]


# --------------------------------------------------------------------------------------------------------------
# models carrying torch.nn.utils.prune reparametrisations (Python API)
# --------------------------------------------------------------------------------------------------------------


def _pruned_net() -> Net:
    net = _net()
    prune.l1_unstructured(net.conv, "weight", amount=0.5)
    prune.random_unstructured(net.fc1, "weight", amount=0.3)
    return net


def test_prune_reparametrisations_are_refused_with_one_line(tmp_path):
    from tickets import FindConfig
    from tickets.models import from_module
    from tickets.verbs.find import find_tickets

    spec = from_module(_pruned_net(), head="fc", input_size=8, in_channels=3)
    with pytest.raises(TicketsError) as info:
        find_tickets(FindConfig(model="mine", task="digits"), model=spec, out=tmp_path)
    text = str(info.value)
    assert "\n" not in text and "'conv.weight'" in text and "'fc1.weight'" in text and "split_pruned" in text
    assert not list(tmp_path.iterdir())  # nothing was trained or written


def test_split_pruned_takes_the_masks_and_leaves_the_model(tmp_path):
    from tickets.formats import pruned_tensors, split_pruned
    from tickets.models import from_module
    from tickets.verbs.prepare import prepare

    net = _pruned_net()
    x = torch.rand(2, 3, 6, 6)
    with torch.no_grad():
        ref = net(x)
    plain, mask = split_pruned(net)
    assert mask.names == ["conv.weight", "fc1.weight"] and pruned_tensors(plain) == []
    assert torch.equal(mask["conv.weight"], net.conv.weight_mask.bool())
    assert mask["conv.weight"].sum() == 54  # l1_unstructured kept half of 108
    assert torch.equal(plain.conv.weight, net.conv.weight_orig * net.conv.weight_mask)
    with torch.no_grad():
        assert torch.equal(plain(x), ref) and torch.equal(net(x), ref)  # same function; the original untouched
    assert pruned_tensors(net) == ["conv.weight", "fc1.weight"]
    # the plain copy goes through the API, the prunable set has every layer, and the mask fits as a ticket
    prepared = prepare(from_module(plain, head="fc", input_size=8, in_channels=3), "digits")
    assert prepared.names == ["conv.weight", "fc1.weight"]
    assert Ticket(mask, {}).fit(prepared.model, head=["fc"]).equal(mask)
    with pytest.raises(TicketsError, match="no torch.nn.utils.prune"):
        split_pruned(plain)


# --------------------------------------------------------------------------------------------------------------
# pre-sparsified checkpoints: ticket-from-weights
# --------------------------------------------------------------------------------------------------------------


def test_ticket_from_weights_keeps_a_checkpoints_zeros_through_transfer(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from tickets.models import load_model

    spec = load_model("small-cnn")
    names = PrunableSet("cnn").resolve(spec.module)
    state = {k: v.clone() for k, v in spec.module.state_dict().items()}
    sizes = [state[n].numel() for n in names]
    total = sum(sizes)
    zeros = round(0.7 * total)
    flat_keep = torch.ones(total, dtype=torch.bool)
    flat_keep[torch.randperm(total, generator=torch.Generator().manual_seed(0))[:zeros]] = False
    keep = dict(zip(names, [k.view_as(state[n]) for k, n in zip(flat_keep.split(sizes), names)]))
    for n in names:
        state[n] = state[n] * keep[n]
    ckpt = tmp_path / "sparse.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(ckpt))

    code, out, err = run(capsys, "ticket-from-weights", "--model", "small-cnn", "--weights", ckpt, "--out",
                         tmp_path / "zeros.safetensors", "--quiet")
    assert code == 0, err
    ticket = load_ticket(tmp_path / "zeros.safetensors")
    assert ticket.mask.names == names and ticket.mask.num_pruned == zeros
    assert ticket.mask.sparsity == pytest.approx(0.7, abs=1 / total)
    assert all(torch.equal(ticket.mask[n], keep[n]) for n in names)
    assert ticket.meta["method"] == "zeros" and ticket.meta["source_weights"]["path"] == str(ckpt)


    common = ["--weights", ckpt, "--task", "digits-0-4", "--save-weights", *FAST]
    code, _, err = run(capsys, "transfer", "--ticket", tmp_path / "zeros.safetensors", "--out", tmp_path / "t", *common)
    assert code == 0, err
    assert "was drawn on" not in err  # the same --weights: θ0 is the checkpoint the ticket records
    assert ticket.meta["theta0_weights"]["sha256"] == ticket.meta["source_weights"]["sha256"]
    assert run(capsys, "transfer", "--model", "small-cnn", "--out", tmp_path / "d", *common)[0] == 0
    tuned = load_file(next((tmp_path / "t").glob("transfer-*/model.safetensors")))
    dense = load_file(next((tmp_path / "d").glob("transfer-*/model.safetensors")))
    revived = {w: sum(int((s[n][~keep[n]] != 0).sum()) for n in names) for w, s in (("ticket", tuned),
                                                                                       ("dense", dense))}
    print(f"checkpoint zeros {zeros}/{total}; non-zero after fine-tuning: {revived}")
    assert revived["ticket"] == 0
    assert revived["dense"] > 0.9 * zeros  # dense fine-tuning revives them: the test can fail
    assert sum(int((tuned[n][keep[n]] != state[n][keep[n]]).sum()) for n in names) > 0.9 * (total - zeros)


def _sparse_checkpoint(path: Path, scale: float = 1.0) -> Path:
    from safetensors.torch import save_file

    from tickets.models import load_model

    state = load_model("small-cnn").module.state_dict()
    save_file({k: (v * (v.abs() > v.abs().median()) * scale if v.dim() > 1 else v).contiguous()
               for k, v in state.items()}, str(path))
    return path


def test_transfer_warns_exactly_when_theta0_is_not_the_one_the_ticket_records(tmp_path, capsys):
    """A ticket records the θ0 it was drawn on; transfer warns when the θ0 it uses is another one — and only then.
    ticket-from-weights used to record its checkpoint where transfer did not look, so the same --weights warned
    and leaving --weights out (the real mismatch) did not."""
    from tickets.ticket import describe
    from tickets.verbs.ticket_from_weights import ticket_from_weights
    from tickets.verbs.transfer import theta0_mismatch

    ckpt = _sparse_checkpoint(tmp_path / "sparse.safetensors")
    other = _sparse_checkpoint(tmp_path / "other.safetensors", scale=2.0)
    copy = tmp_path / "copy.safetensors"  # the same bytes under another path: the same θ0
    copy.write_bytes(ckpt.read_bytes())
    ticket_from_weights("small-cnn", weights=ckpt, out=tmp_path / "zeros.safetensors")
    zeros = load_ticket(tmp_path / "zeros.safetensors")
    assert theta0_mismatch(zeros, ckpt) is None and theta0_mismatch(zeros, copy) is None
    shipped = theta0_mismatch(zeros, None)
    assert shipped and "shipped weights" in shipped and f"--weights {ckpt}" in shipped
    assert "checkpoint" in (theta0_mismatch(zeros, other) or "")
    assert "drawn on checkpoint sha256:" in describe(zeros)  # inspect says which θ0, not a bare "theta0"
    # a ticket ticket-from-weights wrote before it recorded theta0_weights: its source_weights is read
    legacy = Ticket(zeros.mask, {k: v for k, v in zeros.meta.items() if k != "theta0_weights"})
    assert theta0_mismatch(legacy, ckpt) is None and theta0_mismatch(legacy, None)

    # a ticket drawn on the shipped weights (tickets find without --weights; ticket-from-weights of the model)
    ticket_from_weights("small-cnn", out=tmp_path / "own.safetensors")
    own = load_ticket(tmp_path / "own.safetensors")
    assert theta0_mismatch(own, None) is None
    assert "shipped weights" in (theta0_mismatch(own, ckpt) or "") and "drop --weights" in theta0_mismatch(own, ckpt)
    # another tool's mask records no θ0: nothing to compare, no warning
    torch.save({n: t.int() for n, t in zeros.mask.items()}, tmp_path / "mask.pth")
    assert theta0_mismatch(load_ticket(tmp_path / "mask.pth"), ckpt) is None


def test_transfer_without_the_tickets_weights_warns(tmp_path, capsys):
    """The real mismatch: a ticket from a checkpoint's zeros, transferred without that --weights (θ0 = the shipped
    weights, whose zeros are elsewhere). It used to pass silently."""
    ckpt = _sparse_checkpoint(tmp_path / "sparse.safetensors")
    code, _, err = run(capsys, "ticket-from-weights", "--model", "small-cnn", "--weights", ckpt, "--out",
                       tmp_path / "zeros.safetensors", "--quiet")
    assert code == 0, err
    code, _, err = run(capsys, "transfer", "--ticket", tmp_path / "zeros.safetensors", "--task", "digits-0-4",
                       "--out", tmp_path / "runs", *FAST)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "was drawn on" in line]
    assert len(warnings) == 1 and "checkpoint" in warnings[0] and "shipped weights" in warnings[0]
    assert f"--weights {ckpt}" in warnings[0]
    code, out, err = run(capsys, "inspect", tmp_path / "zeros.safetensors")  # and inspect says which θ0
    assert code == 0 and "drawn on checkpoint sha256:" in out


def test_ticket_from_weights_without_zeros_warns(tmp_path, capsys):
    code, out, err = run(capsys, "ticket-from-weights", "--model", "small-cnn", "--out", tmp_path / "z.safetensors")
    assert code == 0 and "sparsity 0.0000" in out and "dense" in err


# --------------------------------------------------------------------------------------------------------------
# tickets export: the model under the ticket
# --------------------------------------------------------------------------------------------------------------


def _channel_ticket(path: Path) -> tuple[Mask, object]:
    from tickets.models import load_model
    from tickets.patterns import get_pattern

    spec = load_model("small-cnn")
    names = PrunableSet("cnn").resolve(spec.module)
    pattern = get_pattern("channel")
    pattern.setup(spec.module, names, spec)
    params = dict(spec.module.named_parameters())
    mask = pattern.select({n: params[n].detach().abs() for n in names}, Mask.ones_like(spec.module, names), 0.5)
    save_ticket(path, Ticket(mask, {"model": "small-cnn", "pattern": pattern.describe()}))
    return mask, pattern


def test_export_compact_and_masked_models(tmp_path, capsys):
    pytest.importorskip("torch_pruning")
    from safetensors.torch import load_file

    from tickets.compact import load_compact, masked_copy
    from tickets.models import load_model

    mask, pattern = _channel_ticket(tmp_path / "chan.safetensors")
    spec = load_model("small-cnn")
    reference = masked_copy(spec, mask, pattern)
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))

    code, out, err = run(capsys, "export", tmp_path / "chan.safetensors", "--compact", "--out", tmp_path / "c")
    assert code == 0, err
    record = json.loads((tmp_path / "c" / "export.json").read_text())
    assert record["compact"] and record["parameters"]["exported"] < record["parameters"]["dense"]
    small = load_compact(tmp_path / "c")
    with torch.no_grad():
        assert float((small(x) - reference(x)).abs().max()) <= 1e-5

    code, out, err = run(capsys, "export", tmp_path / "chan.safetensors", "--out", tmp_path / "m")
    assert code == 0, err
    masked = load_file(tmp_path / "m" / "model.safetensors")
    assert all(torch.equal(masked[n][~mask[n]], torch.zeros(int((~mask[n]).sum()))) for n in mask.names)
    assert torch.equal(masked["conv1.weight"], reference.conv1.weight.detach())

    # unstructured tickets: --compact is refused with one line, the masked model exports
    save_ticket(tmp_path / "u.safetensors", Ticket(_random_mask(spec.module, mask.names), {"model": "small-cnn"}))
    code, _, err = run(capsys, "export", tmp_path / "u.safetensors", "--compact", "--out", tmp_path / "u")
    one_line_error(code, err, "single weights", "no --compact")


def test_export_programs_onnx_and_pt2(tmp_path, capsys):
    pytest.importorskip("torch_pruning")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from tickets.compact import compact
    from tickets.models import load_model

    mask, pattern = _channel_ticket(tmp_path / "chan.safetensors")
    small, _ = compact(load_model("small-cnn"), mask, pattern)
    code, _, err = run(capsys, "export", tmp_path / "chan.safetensors", "--compact", "--format", "onnx", "--out",
                       tmp_path / "o")
    assert code == 0, err
    record = json.loads((tmp_path / "o" / "export.json").read_text())
    assert (tmp_path / "o" / "model.onnx").is_file() and record["max_abs_diff"] <= 1e-4
    code, _, err = run(capsys, "export", tmp_path / "chan.safetensors", "--compact", "--format", "pt2", "--out",
                       tmp_path / "p")
    assert code == 0, err
    program = torch.export.load(str(tmp_path / "p" / "model.pt2")).module()
    x = torch.rand(3, 1, 8, 8)  # another batch size than the export's example: the batch dimension is dynamic
    with torch.no_grad():
        assert float((program(x) - small(x)).abs().max()) <= 1e-4


def test_export_text_model_with_fine_tuned_weights(tmp_path, capsys):
    """hf:<folder> model, head+neuron ticket, --weights of a 3-label fine-tuned model: compact folder and ONNX."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")

    from tickets.compact import load_compact
    from tickets.models import load_model

    tok, folder = _tiny_bert_folder(transformers, tmp_path / "tinybert")
    name = f"hf:{folder}"
    spec = load_model(name)
    mask, pattern = _tuned_head_neuron_ticket(spec, name, tmp_path)

    code, out, err = run(capsys, "export", tmp_path / "hn.safetensors", "--weights", tmp_path / "tuned.safetensors",
                         "--compact", "--out", tmp_path / "c", "--quiet")
    assert code == 0, err
    small = load_compact(tmp_path / "c")
    from tickets.compact import masked_copy

    reference = masked_copy(spec, mask, pattern)
    enc = tok(["the film was good", "it rained all day so we stayed in"], padding=True, return_tensors="pt")
    inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        got, ref, dense = small(**inputs).logits, reference(**inputs).logits, spec.module.eval()(**inputs).logits
    assert got.shape == (2, 3)  # the fine-tuned 3-way head came along
    assert float((got - ref).abs().max()) <= 1e-4 and float((dense - ref).abs().max()) > 1e-3
    code, out, err = run(capsys, "export", tmp_path / "hn.safetensors", "--weights", tmp_path / "tuned.safetensors",
                         "--compact", "--format", "onnx", "--out", tmp_path / "o", "--quiet")
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "export.json").read_text())["max_abs_diff"] <= 1e-4


# --------------------------------------------------------------------------------------------------------------
# Task.from_hf_dataset
# --------------------------------------------------------------------------------------------------------------

WORDS = "the a cat dog sat on mat good bad movie is not very film was great awful".split()


@pytest.fixture()
def tiny_text(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("TICKETS_CACHE", str(tmp_path / "cache"))
    tok = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                                        "[MASK]", *WORDS])})
    g = torch.Generator().manual_seed(0)

    def sentences(n):
        return [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (int(k),), generator=g))
                for k in torch.randint(3, 12, (n,), generator=g)]

    train = {"sentence": sentences(60), "label": [i % 2 for i in range(60)]}
    dev = {"sentence": sentences(20), "label": [(i // 2) % 2 for i in range(20)]}
    return tok, train, dev


def _model_stub(tok):
    from types import SimpleNamespace

    return SimpleNamespace(tokenizer=tok, info={"max_positions": 512})


def test_from_hf_dataset_matches_the_glue_loader(tiny_text, tmp_path):
    """The same SST-2-shaped data as GLUE TSVs and as a dataset gives the same task: tokens, labels, splits."""
    from tickets.tasks import Task, load_task
    from tickets.tasks.base import DataConfig

    tok, train, dev = tiny_text
    folder = tmp_path / "glue" / "SST-2"
    folder.mkdir(parents=True)
    for split, rows in (("train", train), ("dev", dev)):
        lines = ["sentence\tlabel"] + [f"{s}\t{y}" for s, y in zip(rows["sentence"], rows["label"])]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    data = DataConfig(train_size=50, val_size=10)
    model = _model_stub(tok)
    glue = load_task("glue/sst2", model=model, data_root=tmp_path, data=data, seed=3)
    mine = Task.from_hf_dataset({"train": train, "validation": dev}, "sentence", "label", "accuracy", model=model,
                                name="my-sst2", data=data, seed=3, max_length=64)
    assert (mine.num_outputs, mine.primary_metric, mine.kind) == (2, "accuracy", "text")
    for split in ("train", "val", "test"):
        a = list(getattr(glue, split).batches(7))
        b = list(getattr(mine, split).batches(7))
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            for key in ("input_ids", "attention_mask", "token_type_ids", "labels"):
                assert torch.equal(x[key], y[key]), (split, key)


def test_from_hf_dataset_with_datasets_and_errors(tiny_text):
    datasets = pytest.importorskip("datasets")
    from tickets.tasks import Task

    tok, train, dev = tiny_text
    names = ["negative", "positive"]
    features = datasets.Features({"text": datasets.Value("string"), "pair": datasets.Value("string"),
                                  "y": datasets.ClassLabel(names=names)})
    ds = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": train["sentence"], "pair": train["sentence"][::-1],
                                             "y": train["label"]}, features=features),
        "test": datasets.Dataset.from_dict({"text": dev["sentence"], "pair": dev["sentence"][::-1],
                                            "y": dev["label"]}, features=features),
    })
    task = Task.from_hf_dataset(ds, ("text", "pair"), "y", "f1", tokenizer=tok, name="pairs")
    assert task.info["label_names"] == names and task.primary_metric == "f1" and len(task.test) == 20
    batch = next(iter(task.test.batches(4)))
    assert int((batch["input_ids"] == tok.sep_token_id).sum(1).min()) == 2  # a sentence pair per example
    with pytest.raises(TicketsError, match="splits"):
        Task.from_hf_dataset(ds, "text", "y", tokenizer=tok, test_split="validation")
    with pytest.raises(TicketsError, match="no column"):
        Task.from_hf_dataset(ds, "sentence", "y", tokenizer=tok)
    with pytest.raises(TicketsError, match="DatasetDict"):
        Task.from_hf_dataset(ds["train"], "text", "y", tokenizer=tok)
    with pytest.raises(TicketsError, match="tokenizer"):
        Task.from_hf_dataset(ds, "text", "y")
    strings = {"train": {"s": train["sentence"], "y": ["pos" if v else "neg" for v in train["label"]]},
               "test": {"s": dev["sentence"], "y": ["pos" if v else "neg" for v in dev["label"]]}}
    task = Task.from_hf_dataset(strings, "s", "y", tokenizer=tok)
    assert task.info["label_names"] == ["neg", "pos"]
    batch = next(iter(task.test.batches(20)))  # length-bucketed: rows come back by length, `index` says which
    assert batch["labels"].tolist() == [dev["label"][i] for i in batch["index"].tolist()]


# --------------------------------------------------------------------------------------------------------------
# a masked Hugging Face export reloads as the model tickets trained (pooling, head)
# --------------------------------------------------------------------------------------------------------------


def test_masked_hf_export_of_a_mean_pooled_model_reloads_with_its_pooling(tmp_path, capsys):
    """A sentence-transformers checkpoint (mean pooling, untrained pooler, as MiniLM-L6) exported as a masked
    Hugging Face folder: `hf:<folder>` must classify as the masked model does (mean pooling, the fine-tuned head),
    not through the pooler; export.json and a warning say so; the compact folder ships the tokenizer too."""
    transformers = pytest.importorskip("transformers")

    from tickets.compact import load_compact, masked_copy
    from tickets.models import load_model

    tok, folder = _tiny_bert_folder(transformers, tmp_path / "st")
    (folder / "modules.json").write_text(
        '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}, '
        '{"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]')
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text('{"word_embedding_dimension": 32, "pooling_mode_mean_tokens": '
                                                      'true, "pooling_mode_cls_token": false}')
    name = f"hf:{folder}"
    spec = load_model(name)
    assert spec.info["pooling"] == "mean"
    mask, pattern = _tuned_head_neuron_ticket(spec, name, tmp_path)
    reference = masked_copy(spec, mask, pattern).eval()
    enc = tok(["the film was good", "it rained all day so we stayed in", "bad movie"], padding=True,
              return_tensors="pt")
    inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}

    code, _, err = run(capsys, "export", tmp_path / "hn.safetensors", "--weights", tmp_path / "tuned.safetensors",
                       "--out", tmp_path / "m")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("tickets: warning:")]
    assert len(warnings) == 1 and "mean-pooled" in warnings[0] and "AutoModelForSequenceClassification" in warnings[0]
    record = json.loads((tmp_path / "m" / "export.json").read_text())
    assert record["pooling"] == "mean" and "AutoModelForSequenceClassification" in record["pooling_note"]
    assert {"modules.json", "1_Pooling/config.json", "config.json", "model.safetensors"} <= set(record["files"])
    again = load_model(f"hf:{tmp_path / 'm'}")
    assert again.info["pooling"] == "mean" and again.num_outputs == 3  # the exported head, read by mean pooling
    # the head's task travels as transformers' finetuning_task, so `tickets eval --model hf:<folder>` scores it
    assert record["task"] == "glue/sst2" and again.pretrained_task == "glue/sst2"
    with torch.no_grad():
        ref = reference(**inputs).logits
        got = again.module.eval()(**inputs).logits
        assert got.shape == (3, 3) and float((got - ref).abs().max()) <= 1e-5
        plain = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "m")).eval()
        assert float((plain(**inputs).logits - ref).abs().max()) > 1e-3  # why the note is needed

    code, _, err = run(capsys, "export", tmp_path / "hn.safetensors", "--weights", tmp_path / "tuned.safetensors",
                       "--compact", "--out", tmp_path / "c", "--quiet")
    assert code == 0, err
    record = json.loads((tmp_path / "c" / "export.json").read_text())
    assert record["pooling"] == "mean" and "load_compact" in record["pooling_note"]
    assert {"tokenizer_config.json", "compact.json"} <= set(record["files"])
    assert transformers.AutoTokenizer.from_pretrained(str(tmp_path / "c"))("bad movie")["input_ids"] == \
        tok("bad movie")["input_ids"]
    with torch.no_grad():
        assert float((load_compact(tmp_path / "c")(**inputs).logits - ref).abs().max()) <= 1e-5


def _tuned_head_neuron_ticket(spec, name: str, tmp_path):
    """A 3-label head on ``spec`` with every matrix redrawn at std 0.3 (BERT's init is too small for pruning or
    pooling to show in the outputs), saved as ``tmp_path/tuned.safetensors``, and a 40% head+neuron ticket of it
    saved as ``tmp_path/hn.safetensors``. Returns (mask, pattern)."""
    from safetensors.torch import save_file

    from tickets.masks import Mask, PrunableSet
    from tickets.patterns import get_pattern
    from tickets.ticket import Ticket, save_ticket

    spec.module.set_head("classification", 3, "fresh", seed=5)  # "fine-tuned" on a 3-label task
    with torch.no_grad():
        for p in spec.module.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    save_file({k: v.detach().clone().contiguous() for k, v in spec.module.state_dict().items()},
              str(tmp_path / "tuned.safetensors"), metadata={"model": name, "task": "glue/sst2"})  # as transfer does
    names = PrunableSet("bert").resolve(spec.module)
    pattern = get_pattern("head+neuron")
    pattern.setup(spec.module, names, spec)
    params = dict(spec.module.named_parameters())
    mask = pattern.select({n: params[n].detach().abs() for n in names}, Mask.ones_like(spec.module, names), 0.4)
    save_ticket(tmp_path / "hn.safetensors", Ticket(mask, {"model": name, "pattern": pattern.describe()}))
    return mask, pattern


def _tiny_bert_folder(transformers, folder):
    """A random 2-layer BERT (hidden 32, 4 heads, seed 0) and its word-level tokenizer saved in ``folder`` with
    ``save_pretrained``. Returns (tokenizer, folder)."""
    words = ("the film was a quiet delight from start to finish it rained all day so we stayed in good bad "
             "movie").split()
    tok = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                                        "[MASK]", *words])})
    cfg = transformers.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=40, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return tok, folder
