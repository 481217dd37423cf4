"""src/train/ pieces: recipes, schema checks, lr schedule, arch resizing, resume checks, the
compiled step's loss scaling and EMA."""
from __future__ import annotations

import numpy as np
import pytest

from src.config import load_config, to_dict
from src.data import DatasetInfo
from src.errors import ConfigError
from src.space.space import load_arch
from src.train.config import TrainConfig, TrainParams, check_resumable
from src.train.factory import create_model, lr_at, resolve_arch

RECIPES = {"digits": "digits", "cifar10": "cifar10", "imagenet": "imagenet",
           "imagenet_efficientnet": "imagenet", "fashion_mnist": "fashion_mnist",
           "fashion_mnist_full": "fashion_mnist", "fashion_mnist_x2": "fashion_mnist"}


def test_every_recipe_is_listed():
    import os
    assert sorted(RECIPES) == sorted(f[:-5] for f in os.listdir("config/train"))


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_load(name):
    cfg = load_config(TrainConfig, f"config/train/{name}.yaml")
    assert cfg.data.name == RECIPES[name]


def test_digits_recipe_is_the_default():
    recipe, default = load_config(TrainConfig, "config/train/digits.yaml"), TrainConfig()
    assert recipe.data.size == default.data.size == 32
    recipe.data.image_size = default.data.image_size
    assert to_dict(recipe) == to_dict(default)


def test_recipe_values():
    x1, x2 = (load_config(TrainConfig, f"config/train/{n}.yaml") for n in ("fashion_mnist",
                                                                          "fashion_mnist_x2"))
    assert x2.train.epochs == 2 * x1.train.epochs  # the same recipe, twice the epochs
    x2.train.epochs, x2.output_dir = x1.train.epochs, x1.output_dir
    assert to_dict(x2) == to_dict(x1)
    c10 = load_config(TrainConfig, "config/train/cifar10.yaml")
    assert (c10.train.epochs, c10.data.cutout, c10.train.batch_size) == (600, 16, 128)
    assert c10.train.peak_lr == pytest.approx(0.025 * 128 / 96)
    inet = load_config(TrainConfig, "config/train/imagenet.yaml")
    assert (inet.train.epochs, inet.train.batch_size, inet.train.lr) == (350, 512, 0.25)
    assert (inet.train.warmup_epochs, inet.train.weight_decay, inet.train.label_smoothing) == \
        (5, 1e-5, 0.1)
    fm, full = (load_config(TrainConfig, f"config/train/{n}.yaml")
                for n in ("fashion_mnist", "fashion_mnist_full"))
    assert (fm.train.epochs, fm.train.batch_size, fm.train.peak_lr, fm.data.size) == (3, 128, 0.1, 28)
    assert (full.train.epochs, full.train.weight_decay) == (50, 1e-4)
    assert (to_dict(full.data), full.train.peak_lr) == (to_dict(fm.data), fm.train.peak_lr)
    eff = load_config(TrainConfig, "config/train/imagenet_efficientnet.yaml")
    assert (eff.train.activation, eff.train.ema, eff.train.ema_decay) == ("swish", True, 0.9999)
    assert eff.train.epochs == 350 and eff.arch == "hournas_f"


@pytest.mark.parametrize("override,match", [
    ("train.epochs=0", "train.epochs must be >= 1"),
    ("train.batch_size=-4", "train.batch_size must be >= 1"),
    ("train.schedule=step", "unknown train.schedule 'step'; valid: cosine, constant"),
    ("train.activation=gelu", "unknown train.activation 'gelu'"),
    ("train.amp_level=O4", "unknown train.amp_level"),
    ("train.mode=eager", "unknown train.mode 'eager'; valid: graph, pynative"),
    ("train.warmup_epochs=20", "warmup_epochs must be in"),
    ("data.name=mnist", "unknown dataset 'mnist'"),
])
def test_bad_values_are_rejected(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(TrainConfig, None, [override])


def test_lr_schedule_warmup_cosine_and_linear_scaling():
    p = TrainParams(epochs=10, lr=0.1, base_batch=64, batch_size=128, warmup_epochs=2)
    assert p.peak_lr == pytest.approx(0.2)
    spe = 5
    assert lr_at(p, 0, spe) == pytest.approx(0.2 / 10)
    assert lr_at(p, 9, spe) == pytest.approx(0.2)
    assert lr_at(p, 10, spe) == pytest.approx(0.2)
    lrs = [lr_at(p, s, spe) for s in range(10, 50)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 0.2 * 0.01
    assert lr_at(TrainParams(schedule="constant", warmup_epochs=0, lr=0.3, batch_size=64), 7,
                 spe) == pytest.approx(0.3)
    assert TrainParams(lr=0.3, batch_size=32, lr_scaling="none").peak_lr == 0.3


def test_resolve_arch_sizes_for_the_data_and_overrides_activation():
    info = DatasetInfo("digits", 10, 32, 1437, 360)
    arch = resolve_arch("config/arch/fbnet_b.yaml", info,
                        TrainParams(activation="swish", dropout=0.1))
    assert (arch.num_classes, arch.input_size, arch.dropout) == (10, 32, 0.1)
    assert arch.conventions.activation == "swish"
    assert load_arch("config/arch/fbnet_b.yaml").conventions.activation == "relu"
    import mindspore.nn as nn
    net = create_model(arch)
    acts = {type(c).__name__ for _, c in net.cells_and_names()}
    assert "SiLU" in acts and "ReLU" not in acts
    assert isinstance(net.classifier.fc, nn.Dense) and net.classifier.fc.out_channels == 10


def test_resolve_arch_takes_the_datasets_channels_and_logs_it():
    import mindspore as ms
    info = DatasetInfo("fashion_mnist", 10, 28, 60000, 10000, channels=1)
    lines = []
    arch = resolve_arch("tests/fixtures/tiny_arch.yaml", info, TrainParams(), log=lines.append)
    assert (arch.in_channels, arch.input_size, arch.to_dict()["in_channels"]) == (1, 28, 1)
    assert lines == ["architecture tiny: input_size 16 -> 28, in_channels 3 -> 1"]
    net = create_model(arch)
    assert net(ms.Tensor(np.zeros((2, 1, 28, 28), np.float32))).shape == (2, 10)
    same = resolve_arch(arch, info, TrainParams(), log=lines.append)
    assert same is arch and len(lines) == 1


def test_an_arch_given_at_eval_takes_the_trained_channels():
    from src.evaluate import _like
    arch = load_arch("tests/fixtures/tiny_arch.yaml")
    trained = resolve_arch(arch, DatasetInfo("fashion_mnist", 10, 28, 1, 1, channels=1),
                           TrainParams()).to_dict()
    assert _like(arch, trained).in_channels == 1
    assert _like(arch, load_arch("tests/fixtures/tiny_arch.yaml").to_dict()).in_channels == 3


def test_check_resumable():
    stored = to_dict(load_config(TrainConfig, None, ["arch=x.yaml"]))
    check_resumable(stored, load_config(TrainConfig, None, ["arch=x.yaml", "train.epochs=20",
                                                             "data.num_workers=1"]))
    # the architecture itself is compared by record in train(), not by path
    check_resumable(stored, load_config(TrainConfig, None, ["arch=./x.yaml"]))
    # the learning rates may change (a diverged run continues with a lower one) ...
    check_resumable(stored, load_config(TrainConfig, None, ["arch=x.yaml", "train.lr=0.002",
                                                             "train.min_lr=0.0001"]))
    # ... what else the step computes may not
    with pytest.raises(ConfigError, match=r"train.momentum: checkpoint 0.9, now 0.5"):
        check_resumable(stored, load_config(TrainConfig, None, ["arch=x.yaml",
                                                                 "train.momentum=0.5"]))


def test_resume_refuses_an_unreadable_checkpoint_instead_of_an_older_one(tmp_path):
    from src.checkpoint import save_checkpoint
    from src.errors import CheckpointError
    from src.train.checkpoints import list_checkpoints
    from src.rundir import KIND_KEY, TRAIN_KIND
    from src.train.checkpoints import latest_checkpoint

    for step in (2, 4):  # step 2 tagged as before the kind key: still a training checkpoint
        tag = {"format": "hournas-train-1"} if step == 2 else {KIND_KEY: TRAIN_KIND}
        save_checkpoint(str(tmp_path / f"net-1_{step}.ckpt"), {"w": np.ones(3, np.float32)},
                        {**tag, "global_step": step})
    assert [p for p, _ in list_checkpoints(str(tmp_path))] == [
        str(tmp_path / "net-1_2.ckpt"), str(tmp_path / "net-1_4.ckpt")]
    assert latest_checkpoint(str(tmp_path))[0] == str(tmp_path / "net-1_4.ckpt")
    data = (tmp_path / "net-1_4.ckpt").read_bytes()
    (tmp_path / "net-1_6.ckpt").write_bytes(data[:len(data) // 2])  # the newest, cut short
    with pytest.raises(CheckpointError) as e:
        latest_checkpoint(str(tmp_path))
    msg = str(e.value)
    assert f"'{tmp_path / 'net-1_6.ckpt'}'" in msg and "is unreadable" in msg
    assert f"the newest readable one is '{tmp_path / 'net-1_4.ckpt'}' (global step 4)" in msg
    assert "mv " in msg


def test_divergence_command_lowers_the_lr_tenfold():
    from src.train.config import resume_command

    cfg = load_config(TrainConfig, None, ["train.lr=0.5", "output_dir=runs/my run"])
    assert resume_command(cfg, "runs/my run/x-1_2.ckpt").endswith(
        "python train.py --output_dir 'runs/my run' --resume --set train.lr=0.05")
    assert "start again" in resume_command(cfg, None)


def test_step_skips_non_finite_updates_halves_the_scale_and_keeps_an_ema():
    import mindspore as ms

    from src.context import setup_context
    from src.space.space import arch_from_dict
    from src.train.factory import create_loss, create_optimizer
    from src.train.step import TrainStep

    setup_context("CPU", "graph")
    arch = arch_from_dict(dict(name="t", input_size=8, num_classes=3, stem={"c": 4, "k": 3, "s": 1},
                               blocks=["ir_r1_k3_s2_e2_c8"], head=None))
    ms.set_seed(0)
    p = TrainParams()
    net = create_model(arch)
    step = TrainStep(net, create_loss(p), create_optimizer(net, p), loss_scale=64.0, dynamic=True,
                     ema_decay=0.5, scale_window=2)
    step.set_train()
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
    y = ms.Tensor(np.array([0, 1, 2, 0], np.int32))
    lr = ms.Tensor(0.1, ms.float32)
    w = net.stem.conv.weight
    w0 = w.asnumpy().copy()
    ema = {q.name: q for q in step.get_parameters()}["ema.stem.conv.weight"]

    loss, finite = step(x, y, lr)
    assert bool(finite.asnumpy()) and np.isfinite(float(loss.asnumpy()))
    w1 = w.asnumpy().copy()
    assert not np.array_equal(w0, w1)
    # EMA with the warm-up decay min(0.5, 2/11): mostly the new weights
    d = 2.0 / 11.0
    assert np.allclose(ema.asnumpy(), d * w0 + (1 - d) * w1, atol=1e-6)
    assert float(step.scale.asnumpy()) == 64.0

    bad = ms.Tensor(np.full((4, 3, 8, 8), np.inf, np.float32))
    _, finite = step(bad, y, lr)
    assert not bool(finite.asnumpy())
    assert np.array_equal(w.asnumpy(), w1)                   # the update was skipped
    assert float(step.scale.asnumpy()) == 32.0               # and the loss scale halved
    step(x, y, lr)
    step(x, y, lr)
    assert float(step.scale.asnumpy()) == 64.0               # doubled after 2 good steps
    assert len(step.compile_cache) == 1


def test_resume_may_change_the_device_count():
    # train.batch_size is global: the same steps, order and lr on any number of devices
    stored = to_dict(load_config(TrainConfig, None, ["arch=x.yaml", "distributed=true"]))
    check_resumable(stored, load_config(TrainConfig, None, ["arch=x.yaml"]))


def test_sync_batchnorm_swap_keeps_parameter_names_and_values():
    import mindspore as ms
    import mindspore.nn as nn

    from src.space.space import arch_from_dict
    from src.train.factory import use_sync_batchnorm

    arch = arch_from_dict(dict(name="t", input_size=8, num_classes=3, stem={"c": 4, "k": 3, "s": 1},
                               blocks=["ir_r1_k3_s2_e2_c8"], head=16))
    net = create_model(arch)
    for p in net.get_parameters():   # values the swap must carry over
        p.set_data(ms.Tensor(np.random.default_rng(len(p.name)).standard_normal(p.shape)
                             .astype(np.float32)))
    before = {p.name: p.asnumpy() for p in net.get_parameters()}
    old = [c for _, c in net.cells_and_names() if isinstance(c, nn.BatchNorm2d)]
    made = []

    def stand_in(bn):  # nn.SyncBatchNorm needs GPU/Ascend and an initialised group
        made.append(nn.BatchNorm2d(bn.num_features, eps=bn.eps, momentum=1.0 - bn.momentum))
        return made[-1]

    assert use_sync_batchnorm(net, stand_in) == len(old) > 0
    now = [c for _, c in net.cells_and_names() if isinstance(c, nn.BatchNorm2d)]
    assert all(any(c is m for m in made) for c in now) and len(now) == len(old)
    assert [m.momentum for m in made] == [o.momentum for o in old]
    after = {p.name: p.asnumpy() for p in net.get_parameters()}
    assert list(after) == list(before)                        # the names checkpoints use
    assert all(np.array_equal(after[k], before[k]) for k in before)
    plain = create_model(arch)                                 # eval/export load it by name
    not_loaded, _ = ms.load_param_into_net(plain, {p.name: p for p in net.get_parameters()})
    assert not not_loaded
