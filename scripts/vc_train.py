#!/usr/bin/env python
"""Train a VideoCrafter-family model (VideoCrafter2/1 text-to-video, DynamiCrafter, VideoCrafter1 I2V) from a
YAML config (the same core as the VideoCrafter Train node).

    .venv/bin/python scripts/vc_train.py --config train.yaml [--set finetune_steps=200 ...]
    torchrun --nproc_per_node 2 scripts/vc_train.py --config train.yaml     # data parallel

Keys of the YAML are the fields of vc_train/config.py:TrainConfig (examples: scripts/train_*.example.yaml).
Only rank 0 writes files; the data is sharded across ranks; a rerun with the same output_dir resumes from the
newest state.
"""
import argparse
import gc
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import comfy_boot  # noqa: E402


def parse_overrides(pairs):
    import yaml
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def print_progress_class(callbacks_base):
    class PrintProgress(callbacks_base):
        """Progress lines on rank 0; Ctrl-C (KeyboardInterrupt, the base class's interrupt) saves a state."""

        def __init__(self, rank):
            self.rank, self.last = rank, 0.0

        def on_step(self, step, total, loss, samples_per_sec):
            now = time.time()
            if self.rank == 0 and (now - self.last > 5 or step == total):
                self.last = now
                print(f"step {step}/{total}  loss {loss:.5f}  {samples_per_sec:.2f} samples/s", flush=True)
    return PrintProgress


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML file with TrainConfig fields")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")

    comfy_boot.boot(cpu=True if args.cpu else None)
    config_mod = comfy_boot.pack("vc_train.config")
    trainer_mod = comfy_boot.pack("vc_train.trainer")
    training = comfy_boot.pack("vc_train.comfy_models")

    overrides = parse_overrides(args.set)
    if args.cpu:
        overrides.setdefault("device", "cpu")
    cfg = config_mod.TrainConfig.from_yaml(args.config, overrides)
    trainer_mod.check_before_loading(cfg, layout_unet=training.layout_unet)  # a refused model, plan, data, resume or result fails before the models load
    models = training.VideoCrafterTrainingModels.from_files(cfg.checkpoint, cfg.clip_vision, cfg.projector_file, cfg.seed)
    trainer = trainer_mod.Trainer(cfg, models, print_progress_class(trainer_mod.Callbacks)(rank))
    dist = trainer.dist
    try:
        result = trainer.run()
        dist.barrier()  # no rank leaves while another still takes part in a collective
    except KeyboardInterrupt:
        if rank == 0:
            print(f"Interrupted after step {trainer.step}: the run's states are in {trainer.states.store.folder}; "
                  "run the same command again to resume.", file=sys.stderr, flush=True)
        return 130
    finally:
        # The sharded model holds the process group's pending work objects; freed at interpreter exit, after
        # the group, they abort the process ("terminate called without an active exception"): free them first.
        del trainer, models
        gc.collect()
        dist.shutdown()
    if rank == 0:
        print(json.dumps(result.summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
