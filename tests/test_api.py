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


# --- Task.from_numpy: a user's arrays are used as given; labels checked; registry factories checked ---------------

def _digit_arrays(n_train=60, n_test=30):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n_train + n_test, 12, 12, 1), dtype=np.uint8)
    y = np.arange(n_train + n_test) % 10
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def test_from_numpy_augmentation_is_opt_in():
    """A custom task used to crop and flip (flipping digits!) under the default DataConfig(augment=True): an MNIST
    MLP scored 16.6% instead of 39.8%. Now nothing is augmented unless the task is built with augment=True."""
    import pytest

    from tickets.errors import TicketsError

    x_train, y_train, x_test, y_test = _digit_arrays()
    plain = tickets.Task.from_numpy("mine", x_train, y_train, x_test, y_test)
    assert plain.info["augment"] == {"crop_pad": 0, "flip": False}
    gen = torch.Generator().manual_seed(0)
    batch = next(plain.train.batches(len(plain.train), augment=True, generator=gen))
    assert torch.equal(batch["x"], next(plain.train.batches(len(plain.train)))["x"])  # training sees them as given
    assert tickets.Task.from_numpy("m", x_train, y_train, x_test, y_test, augment=True).info["augment"] == \
        {"crop_pad": 2, "flip": True}
    assert tickets.Task.from_numpy("m", x_train, y_train, x_test, y_test, augment=True,
                                   flip=False).info["augment"] == {"crop_pad": 2, "flip": False}
    assert tickets.Task.from_numpy("m", x_train, y_train, x_test, y_test, flip=True).info["augment"]["flip"] is True
    assert tickets.Task.from_tensors("m", x_train, y_train, x_test, y_test, flip=False).info["augment"] == \
        {"crop_pad": 0, "flip": False}
    assert tickets.Task.from_numpy("m", x_train, y_train, x_test, y_test, augment=True,  # the run's config wins
                                   data=DataConfig(augment=False)).info["augment"] == {"crop_pad": 0, "flip": False}
    with pytest.raises(TicketsError, match="augment=False"):
        tickets.Task.from_numpy("m", x_train, y_train, x_test, y_test, augment=False, flip=True)


def test_from_numpy_refuses_test_labels_beyond_the_training_labels():
    """The head used to be sized by the test labels (classes the model is never trained on): now one line, unless
    classes= names every class."""
    import pytest

    from tickets.errors import TicketsError

    x_train, y_train, x_test, y_test = _digit_arrays()
    with pytest.raises(TicketsError, match=r"y_test holds class id 14 but y_train's largest is 9.*classes="):
        tickets.Task.from_numpy("m", x_train, y_train, x_test, y_test + 5)
    ok = tickets.Task.from_numpy("m", x_train, y_train, x_test, y_test + 5, classes=[str(i) for i in range(15)])
    assert ok.num_outputs == 15
    with pytest.raises(TicketsError, match="class id 9 but 5 class names"):
        tickets.Task.from_numpy("m", x_train, y_train, x_test, y_test, classes=list("abcde"))
    assert tickets.Task.from_numpy("m", x_train, y_train, x_test, y_test % 5).num_outputs == 10


def test_registered_factories_are_checked():
    """A model/task factory that cannot take the registry's arguments or returns the wrong thing, and a modality
    no task understands, are TicketsErrors naming the entry (were TypeError / AttributeError later)."""
    import pytest

    from tickets.errors import TicketsError
    from tickets.models import MODELS, load_model
    from tickets.tasks import TASKS, load_task

    def narrow(name):
        return None

    def boom(name, *, model_root=None, pretrained=True):
        raise TypeError("a bug inside the factory")

    MODELS.register("narrow-api-net", narrow, family="cnn", modality="image")
    MODELS.register("none-api-net", lambda name, **kw: None, family="cnn", modality="image")
    MODELS.register("boom-api-net", boom, family="cnn", modality="image")
    TASKS.register("none-api-task", lambda name, **kw: None, modality="image")
    try:
        with pytest.raises(TicketsError, match=r"model 'narrow-api-net': its factory .*narrow\(name\) .*model_root"):
            load_model("narrow-api-net")
        with pytest.raises(TicketsError, match="returned NoneType, not a ModelSpec"):
            load_model("none-api-net")
        with pytest.raises(TypeError, match="a bug inside the factory"):  # not mistaken for a signature problem
            load_model("boom-api-net")
        with pytest.raises(TicketsError, match="task 'none-api-task': .*returned NoneType, not a Task"):
            load_task("none-api-task", model=load_model("small-cnn"))
        with pytest.raises(TicketsError, match="modality='video'"):
            TASKS.register("video-api-task", lambda name, **kw: None, modality="video")
        with pytest.raises(TicketsError, match="modality='audio'"):
            MODELS.register("audio-api-net", narrow, family="cnn", modality="audio")
        assert "video-api-task" not in TASKS and "audio-api-net" not in MODELS
    finally:
        for name in ("narrow-api-net", "none-api-net", "boom-api-net"):
            MODELS.unregister(name)
        TASKS.unregister("none-api-task")
