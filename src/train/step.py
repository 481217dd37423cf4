"""The training step as one compiled graph (``TrainStep``): forward, scaled backward, gradient
mean (data parallel), overflow check, SGD update, EMA update.

Its own module (as in mindcv's ``train_step.py``) because it imports MindSpore at module
level; ``src.train.prepare`` imports it when a run starts, so the config side stays cheap.
"""
from __future__ import annotations

import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore import Parameter, ParameterTuple, Tensor
from mindspore.amp import all_finite
from mindspore.communication import get_group_size

_unscale = ops.MultitypeFuncGraph("unscale")
_ema = ops.MultitypeFuncGraph("ema")


@_unscale.register("Tensor", "Tensor")
def _unscale_grad(scale, grad):
    return grad / ops.cast(scale, grad.dtype)


@_ema.register("Tensor", "Tensor", "Tensor")
def _ema_update(decay, avg, value):
    return ops.assign(avg, avg * decay + (1.0 - decay) * ops.cast(value, avg.dtype))


class TrainStep(nn.Cell):
    """``step(x, y, lr) -> (loss, grads_finite)``. The learning rate is an input, so the
    schedule never recompiles the graph.

    With ``dynamic`` the loss scale halves on overflow (the update is skipped) and doubles
    after ``scale_window`` good steps (MindSpore's DynamicLossScaleManager rule). With
    ``ema_decay`` an exponential moving average of every parameter (``ema.*``) follows the
    updates, its decay warmed up as min(ema_decay, (1 + n) / (10 + n)).
    """

    def __init__(self, net, loss_fn, optimizer, *, loss_scale: float = 1.0, dynamic: bool = False,
                 ema_decay: float | None = None, scale_window: int = 1000):
        super().__init__(auto_prefix=False)
        self.network = nn.WithLossCell(net, loss_fn)
        self.network.set_grad()
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad = ops.GradOperation(get_by_list=True, sens_param=True)
        self.hyper_map = ops.HyperMap()
        self.scale = Parameter(Tensor(float(loss_scale), ms.float32), name="loss_scale",
                               requires_grad=False)
        self.good_steps = Parameter(Tensor(0, ms.int32), name="loss_scale_good_steps",
                                    requires_grad=False)
        self.dynamic = dynamic
        self.window = scale_window
        self.reducer = None
        mode = ms.get_auto_parallel_context("parallel_mode")
        if mode in (ms.ParallelMode.DATA_PARALLEL, ms.ParallelMode.HYBRID_PARALLEL):
            self.reducer = nn.DistributedGradReducer(self.weights, mean=True)
            self.loss_sum = ops.AllReduce()  # the loss logged: the global batch's mean
            self.inv_devices = 1.0 / get_group_size()
        self.use_ema = ema_decay is not None
        if self.use_ema:
            self.model_params = ParameterTuple(list(net.get_parameters()))
            self.ema_params = self.model_params.clone("ema", init="same")
            self.ema_decay = float(ema_decay)
            self.ema_updates = Parameter(Tensor(0.0, ms.float32), name="ema_updates",
                                         requires_grad=False)

    def _adjust_scale(self, finite):
        one = ops.ones_like(self.scale)
        good = ops.select(finite, self.good_steps + 1, ops.zeros_like(self.good_steps))
        grow = good >= self.window
        scale = ops.select(finite, ops.select(grow, self.scale * 2.0, self.scale),
                           ops.maximum(self.scale * 0.5, one))
        good = ops.select(grow, ops.zeros_like(good), good)
        return ops.depend(ops.assign(self.scale, scale), ops.assign(self.good_steps, good))

    def construct(self, x, y, lr):
        # the learning rate is an input: set_data on the optimizer's Parameter between
        # steps is not seen by a compiled graph of a grouped optimizer
        loss = ops.depend(self.network(x, y), ops.assign(self.optimizer.learning_rate, lr))
        sens = ops.ones_like(loss) * ops.cast(self.scale, loss.dtype)
        grads = self.grad(self.network, self.weights)(x, y, sens)
        if self.reducer is not None:
            grads = self.reducer(grads)
            loss = self.loss_sum(loss) * self.inv_devices
        grads = self.hyper_map(ops.partial(_unscale, self.scale), grads)
        finite = all_finite(grads)
        if self.dynamic:
            loss = ops.depend(loss, self._adjust_scale(finite))
        if finite:
            loss = ops.depend(loss, self.optimizer(grads))
            if self.use_ema:
                n = self.ema_updates + 1.0
                loss = ops.depend(loss, ops.assign(self.ema_updates, n))
                # warm-up of the decay (TF's num_updates rule): early averages follow fast
                decay = ops.minimum(self.ema_decay, (1.0 + n) / (10.0 + n))
                loss = ops.depend(loss, self.hyper_map(ops.partial(_ema, decay),
                                                       self.ema_params, self.model_params))
        return loss, finite
