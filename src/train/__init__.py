"""Training a standalone network from an architecture record, as a pipeline of factories:

    cfg   = load_config(TrainConfig, path, overrides)         # train.py (src.train.config)
    arch  = resolve_arch(cfg.arch, info, cfg.train)           # record -> sized for the dataset
    data  = create_dataset(cfg, "train", epoch, start_batch)  # host-decided order (src.data)
    net   = create_model(arch)                                # src.childnet.ChildNet
    loss  = create_loss(cfg.train)
    opt   = create_optimizer(net, cfg.train)                  # (src.train.factory)
    step  = TrainStep(net, loss, opt, ...)                    # src.train.step: one graph
    train(cfg, facts)                                         # src.train.loop

The wing, as the search's (``src.search``): ``config`` (the schema, what a resume may change),
``factory``, ``prepare`` (everything before the first step: the ``Run``), ``checkpoints``
(listing by metadata, ``CheckpointManager``), ``monitor`` (``StateMonitor``, the curves),
``step`` (the compiled step) and ``loop`` (``train``: ``train_epoch``, ``end_epoch``). What it
shares with the search (log, stop signals, resume check, non-finite guard) is src.runlog;
evaluating and loading a trained network is ``src.evaluate`` (eval, export and the analysis
import no training code).

Everything a resumed run needs (epoch, step, optimizer moments, EMA weights, loss scale, best
accuracy, the architecture record and the resolved config) is stored inside the checkpoint;
file names are for people only.
"""
