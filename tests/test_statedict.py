"""Reading checkpoint files, resolving wrapper prefixes, loading, digests (tickets.statedict).

The wrapper layouts are built from our ResNet-18's state dict the way each training code base saves it: MoCo v1/v2
(facebookresearch/moco: ``{"state_dict": module.encoder_q.* + module.encoder_k.* + queue}``), MoCo v3
(``module.base_encoder`` / ``module.momentum_encoder`` / ``module.predictor``), SimCLR ports (``backbone.`` with
the MLP in ``backbone.fc``; ``encoder.`` beside ``projector.``; ``convnet.``), the robustness library
(``{"model": module.normalizer + module.model + module.attacker.{normalize,model}}``), Lightning
(``{"state_dict": model.*}``), ``torch.compile`` (``_orig_mod.``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import warnings

import pytest
import safetensors.torch
import torch
from torch import nn

from tickets.errors import TicketsError
from tickets.models.resnet_imagenet import build
from tickets.statedict import (
    file_digest,
    load_checkpoint,
    load_into,
    match_keys,
    read_state_dict,
    rename,
    state_digest,
)


@pytest.fixture(scope="module")
def r18_state() -> dict[str, torch.Tensor]:
    """A ResNet-18 state dict whose values differ from the seed-0 init (so a load is visible)."""
    return {k: v.clone() for k, v in build("resnet18", seed=1).state_dict().items()}


def _body(state):
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _save(path, obj):
    torch.save(obj, path)
    return path


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.strip() == msg
    return msg


def _assert_loaded(module: nn.Module, state: dict[str, torch.Tensor], *, head: bool = True):
    own = module.state_dict()
    for k, v in state.items():
        if k.startswith("fc.") and not head:
            continue
        assert torch.equal(own[k], v), k


# --- read_state_dict --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["state_dict", "model", "model_state_dict", "net", "params", "module"])
def test_read_nested_one_level(tmp_path, r18_state, key):
    notes = []
    path = _save(tmp_path / "ckpt.pth", {key: r18_state, "epoch": 3, "optimizer": {"state": {}, "param_groups": []}})
    state = read_state_dict(path, notes=notes)
    assert state.keys() == r18_state.keys()
    assert all(torch.equal(state[k], r18_state[k]) for k in state)
    assert any(repr(key) in n for n in notes)


@pytest.mark.parametrize("outer", ["model", "checkpoint"])
def test_read_nested_two_levels(tmp_path, r18_state, outer):
    path = _save(tmp_path / "ckpt.tar", {outer: {"state_dict": r18_state, "step": 1}, "epoch": 3})
    notes = []
    assert read_state_dict(path, notes=notes).keys() == r18_state.keys()
    assert any(f"{outer}/state_dict" in n for n in notes)


def test_read_prefers_the_usual_key(tmp_path, r18_state):
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in r18_state.items()}
    path = _save(tmp_path / "timm.pth.tar", {"state_dict_ema": ema, "state_dict": r18_state, "epoch": 3})
    state = read_state_dict(path)
    assert all(torch.equal(state[k], r18_state[k]) for k in r18_state)


def test_read_detects_format_by_content(tmp_path):
    state = {"a.weight": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3), "a.n": torch.tensor(3)}
    st = tmp_path / "weights.pth"  # safetensors bytes under a torch extension
    st.write_bytes(safetensors.torch.save(state))
    pt = tmp_path / "weights.safetensors"  # torch.save bytes under a safetensors extension
    torch.save(state, pt)
    legacy = tmp_path / "legacy.bin"  # pre-1.6 (non-zip) torch.save format
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    for path in (st, pt, legacy):
        got = read_state_dict(path)
        assert got.keys() == state.keys()
        assert got["a.weight"].dtype == torch.bfloat16 and torch.equal(got["a.weight"], state["a.weight"])


def test_read_allows_argparse_namespace(tmp_path, r18_state):
    path = _save(tmp_path / "dino.pth", {"args": argparse.Namespace(arch="resnet18", lr=0.1), "teacher": r18_state})
    assert read_state_dict(path).keys() == r18_state.keys()


class _Evil:
    """Unpickling this would create ``marker`` (stands for arbitrary code execution)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_read_refuses_pickled_objects_without_running_them(tmp_path, r18_state):
    marker = tmp_path / "executed"
    path = _save(tmp_path / "evil.pth", {"state_dict": r18_state, "hook": _Evil(marker)})
    with pytest.raises(TicketsError) as err:
        read_state_dict(path)
    msg = _one_line(err)
    assert "weights_only" in msg and "re-save" in msg and str(path) in msg
    assert not marker.exists()


def test_read_errors_are_one_line(tmp_path, r18_state):
    cases = {}
    cases["missing"] = (tmp_path / "nope.pth", "not found")
    (tmp_path / "empty.pth").write_bytes(b"")
    cases["empty"] = (tmp_path / "empty.pth", "empty")
    (tmp_path / "text.pth").write_bytes(b"hello, not weights")
    cases["foreign"] = (tmp_path / "text.pth", "neither a safetensors file nor a torch.save")
    whole = io.BytesIO()
    torch.save(r18_state, whole)
    (tmp_path / "cut.pth").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    cases["truncated zip"] = (tmp_path / "cut.pth", "copy it again")
    st = safetensors.torch.save({"w": torch.ones(100)})
    (tmp_path / "cut.safetensors").write_bytes(st[:-50])
    cases["truncated safetensors"] = (tmp_path / "cut.safetensors", "truncated")
    _save(tmp_path / "list.pth", [torch.ones(2)])
    cases["not a dict"] = (tmp_path / "list.pth", "holds a list")
    _save(tmp_path / "meta.pth", {"epoch": 3, "arch": "resnet18"})
    cases["no tensors"] = (tmp_path / "meta.pth", "no dict of tensors")
    _save(tmp_path / "two.pth", {"a": {"w": torch.ones(1)}, "b": {"w": torch.ones(1)}})
    cases["two candidates"] = (tmp_path / "two.pth", "several dicts of tensors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(tmp_path / "scripted.pt"))
    cases["torchscript"] = (tmp_path / "scripted.pt", "TorchScript")
    for label, (path, needle) in cases.items():
        with pytest.raises(TicketsError) as err:
            read_state_dict(path)
        assert needle in _one_line(err), label


def test_read_refuses_a_ticket_file(tmp_path):
    from tickets.masks import Mask
    from tickets.ticket import Ticket, save_ticket

    path = tmp_path / "ticket.safetensors"
    save_ticket(path, Ticket(mask=Mask({"w": torch.ones(3, dtype=torch.bool)}), meta={"model": "x"}))
    with pytest.raises(TicketsError, match="--ticket"):
        read_state_dict(path)


# --- match_keys: wrapper layouts, built synthetically ---------------------------------------------------------


def _moco_v2(state):
    body = _body(state)
    proj = {"fc.0.weight": torch.randn(512, 512), "fc.0.bias": torch.zeros(512),
            "fc.2.weight": torch.randn(128, 512), "fc.2.bias": torch.zeros(128)}
    sd = {f"module.encoder_q.{k}": v for k, v in {**body, **proj}.items()}
    sd.update({f"module.encoder_k.{k}": v + 1 for k, v in {**body, **proj}.items()})
    sd.update({"module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)})
    return {"epoch": 200, "arch": "resnet18", "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}}


def _moco_v1(state):
    enc = {**_body(state), "fc.weight": torch.randn(128, 512), "fc.bias": torch.zeros(128)}  # 128-d projection
    sd = {f"module.encoder_q.{k}": v for k, v in enc.items()}
    sd.update({f"module.encoder_k.{k}": v for k, v in enc.items()})
    sd["module.queue"] = torch.randn(128, 16)
    return {"state_dict": sd}


def _moco_v3(state):
    proj = {"fc.0.weight": torch.randn(64, 512), "fc.1.weight": torch.ones(64), "fc.1.bias": torch.zeros(64),
            "fc.1.running_mean": torch.zeros(64), "fc.1.running_var": torch.ones(64),
            "fc.1.num_batches_tracked": torch.tensor(0), "fc.3.weight": torch.randn(32, 64)}
    sd = {}
    for enc in ("base_encoder", "momentum_encoder"):
        sd.update({f"module.{enc}.{k}": v for k, v in {**_body(state), **proj}.items()})
    sd.update({"module.predictor.0.weight": torch.randn(64, 32), "module.predictor.3.weight": torch.randn(32, 64)})
    return {"state_dict": sd}


def _simclr_backbone(state):
    sd = {f"backbone.{k}": v for k, v in _body(state).items()}
    sd.update({"backbone.fc.0.weight": torch.randn(512, 512), "backbone.fc.0.bias": torch.zeros(512),
               "backbone.fc.2.weight": torch.randn(128, 512), "backbone.fc.2.bias": torch.zeros(128)})
    return {"epoch": 100, "arch": "resnet18", "state_dict": sd}


def _simclr_encoder(state):
    sd = {f"encoder.{k}": v for k, v in _body(state).items()}
    sd.update({"projector.0.weight": torch.randn(512, 512), "projector.2.weight": torch.randn(64, 512)})
    return sd


def _robustness(state):
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    sd = {"module.normalizer.new_mean": mean.view(3, 1, 1), "module.normalizer.new_std": std.view(3, 1, 1)}
    sd.update({f"module.model.{k}": v for k, v in state.items()})
    sd.update({"module.attacker.normalize.new_mean": mean.view(3, 1, 1),
               "module.attacker.normalize.new_std": std.view(3, 1, 1)})
    sd.update({f"module.attacker.model.{k}": v for k, v in state.items()})
    return {"model": sd, "optimizer": {"state": {}, "param_groups": []}, "schedule": None, "epoch": 90}


LAYOUTS = {
    # name: (builder, expected note fragments, head loaded)
    "torchvision": (lambda s: dict(s), [], True),
    "dataparallel": (lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}},
                     ["'module.'", "DataParallel"], True),
    "moco-v2": (_moco_v2, ["'module.encoder_q.'", "MoCo", "'module.encoder_k.'", "projection-head", "fresh",
                           "'module.queue'"], False),
    "moco-v1": (_moco_v1, ["'module.encoder_q.'", "[128, 512]", "stays fresh"], False),
    "moco-v3": (_moco_v3, ["'module.base_encoder.'", "'module.momentum_encoder.'", "projection-head",
                           "module.predictor"], False),
    "simclr-backbone": (_simclr_backbone, ["'backbone.'", "SimCLR", "projection-head", "fresh"], False),
    "simclr-encoder": (_simclr_encoder, ["'encoder.'", "'projector.0.weight'", "no weights for head"], False),
    "simclr-convnet": (lambda s: {f"convnet.{k}": v for k, v in _body(s).items()}, ["'convnet.'"], False),
    "robustness": (_robustness, ["'module.model.'", "robustness", "'module.attacker.model.'",
                                 "'module.normalizer.new_mean'"], True),
    "robustness, attacker only": (lambda s: {"model": {f"module.attacker.model.{k}": v for k, v in s.items()}},
                                  ["'module.attacker.model.'", "the only prefix that fits"], True),
    "lightning": (lambda s: {"state_dict": {f"model.{k}": v for k, v in s.items()}, "epoch": 1, "global_step": 9,
                             "pytorch-lightning_version": "2.2.0"}, ["'model.'", "Lightning"], True),
    "torch.compile": (lambda s: {f"_orig_mod.{k}": v for k, v in s.items()}, ["'_orig_mod.'"], True),
    "any prefix": (lambda s: {f"my_net.trunk.{k}": v for k, v in s.items()}, ["'my_net.trunk.'"], True),
    "old, no BN counters": (lambda s: {k: v for k, v in s.items() if "num_batches" not in k},
                            ["num_batches_tracked"], True),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_wrapper_layouts_load(tmp_path, r18_state, layout):
    builder, fragments, head_loaded = LAYOUTS[layout]
    path = _save(tmp_path / f"{layout}.pth", builder(r18_state))
    module = build("resnet18", seed=0)
    fresh_fc = module.fc.weight.detach().clone()
    report = load_checkpoint(module, path, head=("fc",))
    text = " | ".join(report.notes)
    for fragment in fragments:
        assert fragment in text, (layout, fragment, report.notes)
    _assert_loaded(module, r18_state, head=head_loaded)
    assert report.head_loaded is head_loaded
    if not head_loaded:
        assert torch.equal(module.fc.weight, fresh_fc) and report.fresh == ["fc.weight", "fc.bias"]
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    counters = {k for k in r18_state if k.endswith("num_batches_tracked")} if "no BN" in layout else set()
    assert set(report.loaded) | set(report.fresh) | counters == set(module.state_dict())
    assert not (set(report.loaded) & (set(report.fresh) | counters))


def test_identity_has_no_prefix_note(r18_state):
    mapping, notes = match_keys(r18_state, r18_state, head=("fc",))
    assert mapping == {k: k for k in r18_state} and notes == []


def test_add_prefix_when_the_model_wraps_the_network(r18_state):
    wrapper = nn.Module()
    wrapper.body = build("resnet18")
    mapping, notes = match_keys(r18_state, wrapper.state_dict())
    assert mapping == {k: f"body.{k}" for k in r18_state}
    assert any("added prefix 'body.'" in n for n in notes)
    # both sides wrapped differently: strip one, add the other
    mapping, notes = match_keys({f"module.{k}": v for k, v in r18_state.items()}, wrapper.state_dict())
    assert mapping == {f"module.{k}": f"body.{k}" for k in r18_state}


def test_ambiguous_prefixes_list_the_candidates(r18_state):
    two = {**{f"online.{k}": v for k, v in r18_state.items()}, **{f"target.{k}": v for k, v in r18_state.items()}}
    with pytest.raises(TicketsError) as err:
        match_keys(two, r18_state, head=("fc",), what="weights file 'byol.pth'")
    msg = _one_line(err)
    assert "'online.'" in msg and "'target.'" in msg and "ambiguous" in msg and "strip=" in msg
    assert msg.startswith("weights file 'byol.pth'")
    mapping, notes = match_keys(two, r18_state, strip="target.")
    assert set(mapping.values()) == set(r18_state) and all(k.startswith("target.") for k in mapping)


def test_missing_and_extra_keys_name_the_first_three(r18_state):
    broken = {f"module.{k}": v for k, v in r18_state.items() if not k.startswith("layer4.1.")}
    broken.update({"module.layer5.0.conv1.weight": torch.ones(1), "module.layer5.0.bn1.weight": torch.ones(1)})
    with pytest.raises(TicketsError) as err:
        match_keys(broken, r18_state, head=("fc",), what="could not load weights for 'resnet18' from 'x.pth'")
    msg = _one_line(err)
    assert msg.startswith("could not load weights for 'resnet18' from 'x.pth': names do not fit the model")
    assert "'module.'" in msg  # the best renaming found
    assert "missing 'layer4.1.conv1.weight', 'layer4.1.bn1.weight', 'layer4.1.bn1.bias' … (10 in all)" in msg
    assert "unexpected 'module.layer5.0.conv1.weight', 'module.layer5.0.bn1.weight'" in msg
    assert "'conv1.weight'" in msg  # the names the model expects


def test_missing_keys_are_an_error_without_wrappers(r18_state):
    partial = {k: v for k, v in r18_state.items() if k != "layer2.0.downsample.0.weight"}
    with pytest.raises(TicketsError, match=r"missing 'layer2\.0\.downsample\.0\.weight'"):
        match_keys(partial, r18_state, head=("fc",))


def test_drop_patterns_and_prune_reparametrisation(tmp_path, r18_state):
    sd = dict(r18_state)
    sd["conv1.total_ops"] = torch.zeros(1)  # thop profiler counters
    sd["total_params"] = torch.zeros(1)
    w = sd.pop("layer1.0.conv1.weight")
    mask = (torch.rand_like(w) > 0.5).float()
    sd["layer1.0.conv1.weight_orig"], sd["layer1.0.conv1.weight_mask"] = w, mask
    module = build("resnet18")
    report = load_checkpoint(module, _save(tmp_path / "pruned.pth", sd), head=("fc",))
    assert any("dropped 2 keys" in n for n in report.notes)
    assert any("folded 1 torch.nn.utils.prune" in n and "--ticket" in n for n in report.notes)
    assert torch.equal(module.layer1[0].conv1.weight, w * mask)


def test_normaliser_mismatch_is_warned(tmp_path, r18_state):
    sd = _robustness(r18_state)
    sd["model"]["module.normalizer.new_mean"] = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)
    report = load_checkpoint(build("resnet18"), _save(tmp_path / "r.pth", sd), head=("fc",))
    assert any(n.startswith("warning: the file normalises inputs with mean [0.5, 0.5, 0.5]") for n in report.notes)


# --- match_keys for masks (subset mode) ----------------------------------------------------------------------


def test_subset_mode_for_masks(r18_state):
    params = [k for k, _ in build("resnet18").named_parameters()]
    masks = {f"module.{k}": torch.ones(1) for k in params if k.endswith("conv2.weight")}
    mapping, notes = match_keys(masks, params, subset=True)
    assert mapping == {k: k[len("module."):] for k in masks} and "'module.'" in notes[0]
    lightning = {f"model.{k}": 1 for k in params[:5]}
    assert set(match_keys(lightning, params, subset=True)[0].values()) == set(params[:5])
    # a mask entry that lands nowhere is an error, not silently skipped
    with pytest.raises(TicketsError, match=r"unexpected 'module\.layer9\.weight'"):
        match_keys({**masks, "module.layer9.weight": 1}, params, subset=True, what="mask")
    # a mask over a few tensors: stripping 'module.' is the answer, not swapping 'module.layer1.' for 'layer2.'
    few = {f"module.layer1.1.conv{i}.weight": torch.ones(1) for i in (1, 2)}
    assert match_keys(few, params, subset=True)[0] == {k: k[len("module."):] for k in few}
    # plain names need no renaming
    assert match_keys(params[:3], params, subset=True) == ({k: k for k in params[:3]}, [])


def test_rename(r18_state):
    src = {f"module.{k}": v for k, v in r18_state.items()}
    mapping, _ = match_keys(src, r18_state)
    out = rename(src, mapping)
    assert list(out) == list(r18_state) and all(out[k] is src[f"module.{k}"] for k in out)


# --- load_into ---------------------------------------------------------------------------------------------------


def test_load_into_names_the_first_shape_mismatch(r18_state):
    bad = dict(r18_state)
    bad["layer3.0.conv1.weight"] = torch.zeros(256, 64, 3, 3)
    bad["layer4.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(TicketsError) as err:
        load_into(build("resnet18"), bad)
    msg = _one_line(err)
    assert "'layer3.0.conv1.weight' has shape [256, 64, 3, 3] in the weights but [256, 128, 3, 3]" in msg
    assert "layer4" not in msg


def test_load_into_strict_and_lenient(r18_state):
    partial = {k: v for k, v in r18_state.items() if not k.startswith("fc.")}
    partial["extra.weight"] = torch.ones(1)
    with pytest.raises(TicketsError) as err:
        load_into(build("resnet18"), partial)
    assert "missing 'fc.weight', 'fc.bias'; unexpected 'extra.weight'" in _one_line(err)
    module = build("resnet18")
    notes = load_into(module, partial, strict=False)
    assert any("2 tensors not in the weights" in n for n in notes)
    assert any("unknown to the model, ignored: 'extra.weight'" in n for n in notes)
    assert torch.equal(module.conv1.weight, r18_state["conv1.weight"])


def test_load_into_converts_half_precision(r18_state):
    half = {k: v.half() if v.is_floating_point() else v for k, v in r18_state.items()}
    module = build("resnet18")
    notes = load_into(module, half)
    assert module.conv1.weight.dtype == torch.float32
    assert torch.equal(module.conv1.weight, half["conv1.weight"].float())
    n_float = sum(v.is_floating_point() for v in r18_state.values())
    assert f"{n_float} tensors stored as float16: converted to the model's float32" in notes


# --- digests -------------------------------------------------------------------------------------------------------


def test_state_digest_framing_matches_its_definition():
    t = torch.tensor([1, 2], dtype=torch.int32)
    expected = hashlib.sha256(b"a\0int32\0[2]\x008\0" + t.numpy().tobytes()).hexdigest()
    assert state_digest({"a": t}) == expected


def test_state_digest_sensitivity():
    base = {"b.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a.bias": torch.ones(3)}
    d = state_digest(base)
    assert d == state_digest(dict(reversed(list(base.items()))))  # order of keys does not matter
    assert d == state_digest({**base, "b.weight": base["b.weight"].t().contiguous().t()})  # layout does not
    changed = [
        {**base, "a.bias": torch.tensor([1.0, 1.0, 1.0 + 2**-20])},  # one value
        {**base, "a.bias": torch.ones(3, dtype=torch.float64)},  # dtype
        {**base, "b.weight": base["b.weight"].reshape(3, 2)},  # shape, same bytes
        {"c.weight": base["b.weight"], "a.bias": base["a.bias"]},  # name
    ]
    digests = {state_digest(s) for s in changed}
    assert len(digests) == len(changed) and d not in digests
    bf = {"w": torch.tensor([1.5, -2.0], dtype=torch.bfloat16)}
    assert state_digest(bf) != state_digest({"w": bf["w"].float()})
    assert state_digest({"m": torch.tensor([True, False])}) != state_digest({"m": torch.tensor([False, True])})


def test_file_digest_streams_large_files(tmp_path):
    path = tmp_path / "big.bin"
    data = os.urandom(3 * (1 << 20) + 123)
    path.write_bytes(data)
    assert file_digest(path) == hashlib.sha256(data).hexdigest()
    with pytest.raises(TicketsError, match="check the path"):
        file_digest(tmp_path / "none.bin")


def test_a_renaming_that_loads_more_is_not_ambiguous_with_one_that_loads_less():
    """model.bert.* + model.classifier.* into bert.* + classifier.*: stripping 'model.' loads the head too, so it
    wins over 'model.bert.' → 'bert.' (which would leave the head out); not an ambiguity error."""
    target = ["bert.encoder.w", "bert.embeddings.w", "classifier.weight", "classifier.bias"]
    source = ["model." + k for k in target]
    mapping, notes = match_keys(source, target, head=("classifier",))
    assert mapping == dict(zip(source, target)) and "'model.'" in notes[0]


def test_a_head_of_another_shape_is_reported_with_both_shapes(tmp_path, r18_state):
    """eval needs to say *why* the head stayed fresh (a CIFAR-100 head for a CIFAR-10 task), with the shapes."""
    state = dict(r18_state)
    state["fc.weight"], state["fc.bias"] = torch.zeros(100, 512), torch.zeros(100)
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file(state, str(path), metadata={"task": "cifar100"})
    report = load_checkpoint(build("resnet18"), path, head=("fc",))
    assert report.fresh == ["fc.weight", "fc.bias"]
    assert report.head_mismatch == ("fc.weight", [100, 512], [1000, 512])
    assert load_checkpoint(build("resnet18"), _save_plain(tmp_path, r18_state), head=("fc",)).head_mismatch is None
    from tickets.statedict import safetensors_metadata

    assert safetensors_metadata(path) == {"task": "cifar100"}
    (tmp_path / "junk").write_bytes(b"\xff" * 20)
    assert safetensors_metadata(tmp_path / "junk") == {} and safetensors_metadata(tmp_path / "absent") == {}


def _save_plain(tmp_path, state):
    path = tmp_path / "plain.safetensors"
    safetensors.torch.save_file(state, str(path))
    return path


def test_torch_load_state_dict_errors_become_one_line_naming_the_first_mismatch():
    from tickets.statedict import is_load_error, load_error_detail

    cases = [({"weight": torch.zeros(5, 3), "bias": torch.zeros(2)},
              "tensor 'weight' has shape [5, 3] in the weights but [2, 3] in the model"),
             ({"weight": torch.zeros(2, 3)}, "missing 'bias'"),
             ({"weight": torch.zeros(2, 3), "bias": torch.zeros(2), "x": torch.zeros(1)}, "unexpected 'x'")]
    for state, detail in cases:
        with pytest.raises(RuntimeError) as err:
            nn.Linear(3, 2).load_state_dict(state)
        assert is_load_error(err.value) and load_error_detail(err.value) == detail
    assert not is_load_error(ValueError("Error(s) in loading state_dict")) and not is_load_error(RuntimeError("x"))


def test_load_into_explains_a_module_with_custom_loading_rules():
    """A module whose own _load_from_state_dict refuses what the shape check passed: the detail, not torch's
    header line 'Error(s) in loading state_dict for X:'."""

    class Picky(nn.Linear):
        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
            errors.append(f"size mismatch for {prefix}weight: copying a param with shape torch.Size([9]) from "
                          "checkpoint, the shape in current model is torch.Size([2, 3]).")

    with pytest.raises(TicketsError, match=r"could not load the weights into Picky \(tensor 'weight' has shape \[9\]"):
        load_into(Picky(3, 2), nn.Linear(3, 2).state_dict())


def test_load_notes_count_in_the_singular_for_one(r18_state):
    state = {"module." + k: v for k, v in r18_state.items()}
    _, notes = match_keys(state, r18_state)
    assert any(f"from {len(state)} keys" in n for n in notes)
    one = {"module.fc.bias": r18_state["fc.bias"]}
    _, notes = match_keys(one, {"fc.bias": r18_state["fc.bias"]})
    assert any("from 1 key (" in n for n in notes), notes
