"""ImageNet ResNet-18/50 and MobileNet-v2 in torchvision's layout (tickets.models.resnet_imagenet).

Independent references, generated with torchvision's own model definitions (``torchvision/models/resnet.py`` and
``mobilenetv2.py`` run standalone, torchvision itself not installed) and committed as data:

* ``fixtures/torchvision_{resnet18,resnet50,mobilenet_v2}_keys.json``: every state-dict entry (parameters and
  buffers, ``num_batches_tracked`` included) → shape, in torchvision's order;
* ``fixtures/torchvision_forward_reference.json``: logits of torchvision's models, in eval mode, with every
  tensor set by ``deterministic_state`` below, on ``reference_input()`` (ImageNet-normalised first, since
  torchvision's models take normalised inputs and ours take [0, 1]).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tickets.errors import TicketsError
from tickets.masks import PrunableSet
from tickets.models.resnet_imagenet import MEAN, STD, build, load, model_names

FIXTURES = Path(__file__).parent / "fixtures"
TV_NAMES = {"resnet18": "resnet18", "resnet50": "resnet50", "mobilenet-v2": "mobilenet_v2"}


def deterministic_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A well-scaled, seed-free fill of a ResNet / MobileNet state dict (also used to make the reference)."""
    out = {}
    for i, (name, t) in enumerate(state.items()):
        k = torch.arange(t.numel(), dtype=torch.float64)
        wave = torch.sin(0.37 * k + i).reshape(t.shape)
        if name.endswith("num_batches_tracked"):
            v = torch.zeros_like(t)
        elif name.endswith("running_var"):
            v = 1.0 + 0.5 * wave**2
        elif name.endswith("running_mean"):
            v = 0.1 * wave
        elif t.dim() == 1 and name.endswith("weight"):  # BatchNorm scale
            v = 1.0 + 0.1 * wave
        elif name.endswith("bias"):
            v = 0.01 * wave
        else:  # conv / linear weight: He-scaled (variance 2 / fan_in)
            fan_in = t[0].numel()
            v = wave * math.sqrt(4.0 / fan_in)
        out[name] = v.to(t.dtype)
    return out


def reference_input() -> torch.Tensor:
    """[2, 3, 64, 64] pixels in [0, 1]: a smooth pattern and a hash-like (noise) one."""
    k = torch.arange(3 * 64 * 64, dtype=torch.float64)
    smooth = (torch.sin(0.013 * k) * torch.cos(0.0007 * k) + 1) / 2
    noise = torch.frac(torch.abs(torch.sin(0.1 * k + 0.3) * 437.585453))
    return torch.stack([smooth, noise]).reshape(2, 3, 64, 64).float()


@pytest.fixture(scope="module")
def specs():
    return {name: load(name) for name in model_names()}


# --- layout ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet-v2"])
def test_state_dict_layout_is_torchvisions(specs, name):
    expected = json.loads((FIXTURES / f"torchvision_{TV_NAMES[name]}_keys.json").read_text())
    ours = {k: list(v.shape) for k, v in specs[name].module.state_dict().items()}
    assert list(ours) == list(expected)  # names and order
    assert ours == expected  # shapes
    n_params = sum(p.numel() for p in specs[name].module.parameters())
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    assert n_params == sum(math.prod(s) for k, s in expected.items() if not k.endswith(buffers))


def test_published_parameter_counts(specs):
    # torchvision's documented sizes (11.7 M / 25.6 M / 3.5 M)
    counts = {n: sum(p.numel() for p in s.module.parameters()) for n, s in specs.items()}
    assert counts == {"resnet18": 11_689_512, "resnet50": 25_557_032, "mobilenet-v2": 3_504_872}


# --- forward -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet-v2"])
def test_forward_random_weights(specs, name):
    module = specs[name].module.eval()
    with torch.no_grad():
        y = module(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert y.shape == (2, 1000) and torch.isfinite(y).all()
    # (MobileNet-v2's logits are ~1e-9 here: torchvision's fan_out init shrinks activations under eval-mode BN)
    assert y.std() > 0 and not torch.allclose(y[0], y[1], rtol=1e-3, atol=0)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet-v2"])
def test_forward_matches_torchvision(name):
    ref = json.loads((FIXTURES / "torchvision_forward_reference.json").read_text())[TV_NAMES[name]]
    module = build(name)
    module.load_state_dict(deterministic_state(module.state_dict()))
    with torch.no_grad():
        y = module.eval()(reference_input()).double()
    expected = torch.tensor(ref["logits_first16"], dtype=torch.float64)
    scale = float(torch.tensor(ref["row_std"]).max())
    assert torch.allclose(y[:, :16], expected, rtol=0, atol=1e-4 * scale), (y[:, :16] - expected).abs().max()
    assert torch.allclose(y.mean(1), torch.tensor(ref["row_mean"], dtype=torch.float64), atol=1e-4 * scale)
    assert torch.allclose(y.std(1), torch.tensor(ref["row_std"], dtype=torch.float64), rtol=1e-4)
    assert y.argmax(1).tolist() == ref["argmax"]


def test_normalisation_is_inside(specs):
    norm = specs["resnet18"].module.normalize
    assert torch.allclose(norm.mean.flatten(), torch.tensor(MEAN))
    assert torch.allclose(norm.std.flatten(), torch.tensor(STD))
    assert not any("normalize" in k for k in specs["resnet18"].module.state_dict())


def test_embed_is_the_input_of_the_head(specs):
    for name, spec in specs.items():
        module = spec.module.eval()
        x = torch.rand(1, 3, 64, 64)
        with torch.no_grad():
            z = module.embed(x)
            head = module.get_submodule(spec.head[0])
            assert z.shape == (1, head.in_features) and torch.allclose(head(z), module(x)), name


# --- init ----------------------------------------------------------------------------------------------------------


def test_torchvision_init_scheme():
    module = build("resnet50", seed=3)
    w = module.layer4[0].conv2.weight  # 512×512×3×3: fan_out = 512 · 9
    assert abs(w.std().item() / math.sqrt(2.0 / (512 * 9)) - 1) < 0.02 and abs(w.mean().item()) < 1e-3
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))
    mnv2 = build("mobilenet-v2")
    assert abs(mnv2.classifier[1].weight.std().item() / 0.01 - 1) < 0.02 and not mnv2.classifier[1].bias.any()
    # seeded: same seed, same weights; another seed, other weights; the global RNG is left alone
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = build("resnet18", seed=0), build("resnet18", seed=0)
    assert torch.equal(torch.rand(1), before)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, build("resnet18", seed=1).conv1.weight)


# --- ModelSpec -----------------------------------------------------------------------------------------------------


def test_spec_fields_and_prunable_preset(specs):
    convs = {"resnet18": 20, "resnet50": 53, "mobilenet-v2": 52}
    for name, spec in specs.items():
        assert spec.name == name and spec.prunable_preset == "cnn"
        assert spec.input_size == 224 and spec.in_channels == 3 and spec.num_outputs == 1000
        assert spec.pretrained_task is None and spec.info["pretrained"] is False
        names = PrunableSet.parse(spec.prunable_preset).resolve(spec.module)
        stem = "conv1.weight" if name.startswith("resnet") else "features.0.0.weight"
        assert len(names) == convs[name] - 1 and stem not in names
        assert not any(n.startswith(spec.head[0]) for n in names)
    assert specs["mobilenet-v2"].head == ["classifier.1"] and specs["resnet50"].head == ["fc"]


def test_fresh_head_for_a_task(specs):
    class Task:
        name, num_outputs = "cifar10", 10

    for name in ("resnet18", "mobilenet-v2"):
        spec = load(name)
        spec.adapt_to(Task(), "fresh", seed=0)
        with torch.no_grad():
            assert spec.module.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_load_torchvision_checkpoint(tmp_path):
    src = build("resnet18", seed=5).state_dict()
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(src, path)
    spec = load("resnet18", weights=path)
    assert spec.pretrained_task == "imagenet" and spec.info["pretrained"] is True
    assert spec.info["weights"] == str(path) and len(spec.info["weights_sha256"]) == 64
    assert "loaded" in spec.info["head"]
    assert all(torch.equal(spec.module.state_dict()[k], v) for k, v in src.items())
    assert not spec.module.training


def test_load_self_supervised_checkpoint_keeps_a_fresh_head(tmp_path):
    body = {k: v for k, v in build("resnet50", seed=5).state_dict().items() if not k.startswith("fc.")}
    sd = {f"module.encoder_q.{k}": v for k, v in body.items()}
    sd.update({"module.encoder_q.fc.0.weight": torch.randn(2048, 2048), "module.encoder_q.fc.0.bias": torch.zeros(2048),
               "module.encoder_q.fc.2.weight": torch.randn(128, 2048), "module.encoder_q.fc.2.bias": torch.zeros(128)})
    sd.update({k.replace("encoder_q", "encoder_k"): v for k, v in sd.items()})
    path = tmp_path / "moco_v2_800ep_pretrain.pth.tar"
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": sd}, path)
    spec = load("resnet50", weights=path)
    random_fc = build("resnet50").fc.weight
    assert spec.pretrained_task is None and spec.info["head"].startswith("fresh")
    assert torch.equal(spec.module.fc.weight, random_fc)
    assert torch.equal(spec.module.layer3[2].conv2.weight, body["layer3.2.conv2.weight"])
    assert any("MoCo" in n for n in spec.info["weights_notes"])


def test_load_errors(tmp_path, monkeypatch):
    with pytest.raises(TicketsError, match="unknown ImageNet architecture 'resnet34'.*resnet18"):
        load("resnet34")
    monkeypatch.delenv("TICKETS_MODELS", raising=False)
    with pytest.raises(TicketsError, match="--weights FILE"):
        load("resnet18", pretrained=True)
    with pytest.raises(TicketsError, match=r"no weights file for 'resnet50' in .*resnet50-imagenet.*--weights"):
        load("resnet50", model_root=tmp_path, pretrained=True)
    (tmp_path / "resnet50-imagenet").mkdir()
    torch.save(build("resnet18").state_dict(), tmp_path / "resnet50-imagenet" / "wrong.pth")
    with pytest.raises(TicketsError) as err:
        load("resnet50", model_root=tmp_path, pretrained=True)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("could not load weights for 'resnet50' from") and "wrong.pth" in msg


def test_shipped_folder(tmp_path):
    (tmp_path / "mobilenet-v2-imagenet").mkdir()
    src = build("mobilenet-v2", seed=2).state_dict()
    import safetensors.torch

    safetensors.torch.save_file({k: v.contiguous() for k, v in src.items()},
                                tmp_path / "mobilenet-v2-imagenet" / "mobilenet_v2.safetensors")
    spec = load("mobilenet-v2", model_root=tmp_path, pretrained=True)
    assert spec.pretrained_task == "imagenet"
    assert torch.equal(spec.module.classifier[1].weight, src["classifier.1.weight"])


# --- the CIFAR ResNet and MobileNet-v1 take any checkpoint layout too ------------------------------------------------


def test_cifar_resnet_and_mobilenet_v1_weights_path(tmp_path):
    import safetensors.torch

    from tickets.models.mobilenet import build_mobilenet
    from tickets.models.resnet_cifar import build_resnet

    src = build_resnet(20, None).module.state_dict()
    src = {k: v + 0.5 if v.is_floating_point() else v for k, v in src.items()}
    path = tmp_path / "lightning.safetensors"
    safetensors.torch.save_file({f"model.{k}": v.contiguous() for k, v in src.items()}, path)
    spec = build_resnet(20, path)
    assert spec.pretrained_task == "cifar10" and any("'model.'" in n for n in spec.info["weights_notes"])
    assert all(torch.equal(spec.module.state_dict()[k], v) for k, v in src.items())
    # a CIFAR-100 head: loaded body, fresh head, no claim about the label space
    src100 = {**src, "linear.weight": torch.zeros(100, 64), "linear.bias": torch.zeros(100)}
    torch.save({"state_dict": {f"module.{k}": v for k, v in src100.items()}}, tmp_path / "c100.th")
    spec = build_resnet(20, tmp_path / "c100.th")
    assert spec.pretrained_task is None and spec.module.linear.out_features == 10
    assert torch.equal(spec.module.layer3[2].conv2.weight, src["layer3.2.conv2.weight"])

    mob = build_mobilenet(None).module.state_dict()
    torch.save({"model": {f"module.{k}": v for k, v in mob.items()}}, tmp_path / "mnv1.pth")
    spec = build_mobilenet(tmp_path / "mnv1.pth")
    assert spec.pretrained_task == "imagenet" and spec.info["weights_sha256"]


def test_cifar_and_mobilenet_v1_factories(tmp_path, monkeypatch):
    from tickets.models import mobilenet, resnet_cifar

    monkeypatch.delenv("TICKETS_MODELS", raising=False)
    assert resnet_cifar.load("resnet32-cifar10", pretrained=False).name == "resnet32-cifar10"
    with pytest.raises(TicketsError, match="unknown CIFAR ResNet 'resnet21-cifar10'"):
        resnet_cifar.load("resnet21-cifar10")
    with pytest.raises(TicketsError, match="TICKETS_MODELS"):
        resnet_cifar.load("resnet20-cifar10")
    state = mobilenet.load(pretrained=False).module.state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "m.pth")
    spec = mobilenet.load(weights=tmp_path / "m.pth")
    assert spec.info["weights"] == str(tmp_path / "m.pth") and spec.pretrained_task == "imagenet"
