"""The Python API: any nn.Module goes through the same find/transfer code as the registry models."""

import torch
from torch import nn

import tickets
from tickets import DataConfig, FindConfig, ScheduleConfig, TrainConfig, TransferConfig


class Net(nn.Module):
    """A user's own model: no tickets-specific code in it."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.features(x))


def test_custom_module_find_and_transfer(tmp_path):
    torch.manual_seed(0)
    net = Net()
    spec = tickets.from_module(net, name="mine", head="fc", input_size=8, in_channels=1, prunable_preset="cnn-all")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = FindConfig(model="mine", task="digits-5-9", method="omp",
                     schedule=ScheduleConfig(kind="explicit", sparsities=[0.5]),
                     train=TrainConfig(epochs=1, batch_size=64), data=DataConfig(train_size=300))
    res = tickets.find_tickets(cfg, model=spec, out=tmp_path, device="cpu", progress=False)
    ticket = tickets.load_ticket(res.levels[0]["ticket"])
    assert set(ticket.mask.names) == {"features.0.weight", "features.2.weight"}  # cnn-all: the head is not pruned
    assert abs(ticket.mask.sparsity - 0.5) < 1e-3
    assert ticket.meta["model"].startswith("mine@")
    assert all(torch.equal(before[k], net.state_dict()[k]) for k in before)  # the user's module is untouched
    out = tickets.transfer_ticket(TransferConfig(model="mine", task="digits-0-4", ticket=res.levels[0]["ticket"],
                                          train=TrainConfig(epochs=1, batch_size=64), data=DataConfig(train_size=300)),
                           model=spec, out=tmp_path, device="cpu", progress=False)
    assert out.metrics["sparsity"] == ticket.mask.sparsity
