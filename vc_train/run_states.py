"""A run's training states as the trainer keeps them: which run this is (a new one, or the one it resumes), what a
state holds besides the weights (optimizer, grad scaler, RNG, data position, history, configuration), writing one
and reading back the one a resumed run continues. The files themselves are `state.StateStore`'s."""
import logging

import torch

from . import sharding
from .resume import state_to_resume
from .state import StateStore, new_run_id

log = logging.getLogger("vc_train")


class RunStates:
    def __init__(self, cfg, outputs, dist):
        """`outputs`: the run's RunOutputs (a new run refuses results another run wrote)."""
        self.cfg, self.outputs, self.dist = cfg, outputs, dist
        self.store = StateStore(outputs.paths["states"], cfg.keep_states)  # its run_id: set by `begin_run`

    @property
    def run_id(self):
        return self.store.run_id

    def begin_run(self, dataset_info):
        """The state this run continues, or None for a new run; sets the run id. Decided on rank 0
        (`resume.state_to_resume`, now with the dataset read), the same on every rank."""
        def find_run():
            path = state_to_resume(self.cfg, self.store, dataset_info, self.dist.world_size)
            run_id = StateStore.run_of(path) if path else None
            self.outputs.refuse_foreign(run_id)
            return path, run_id or new_run_id()

        path, self.store.run_id = self.dist.on_main(find_run)
        log.info("Training run %s in %s", self.store.run_id, self.store.folder)
        return path

    def load(self, path, state_names):
        """(weights, optimizer state, meta) of the state `path`, with this rank's optimizer shards in a sharded run."""
        weights, optimizer_state, meta = StateStore.load(path)
        missing = [n for n in state_names if n not in weights]
        if missing:
            raise ValueError(f"Training state {path} does not fit this configuration (missing {missing[:3]}); "
                             "use another output_dir or resume: false")
        if self.cfg.sharding == "fsdp":
            optimizer_state["optimizer"] = StateStore.load_rank_part(path, self.dist.rank)
        if meta.get("world_size", 1) != self.dist.world_size:
            log.warning("Resuming a %d-rank state on %d ranks: the data order changes", meta["world_size"], self.dist.world_size)
        log.info("Resumed from %s at step %d", path, meta["step"])
        return weights, optimizer_state, meta

    def save(self, step, stage, weights, optimizer, scaler, batches, history, sharded):
        """The state after `step` (every rank calls it): `weights` the state weights (rank 0's; None elsewhere),
        `optimizer` / `scaler` the stage's, `batches` the run's TrainingBatches (its data position), `sharded`:
        each rank writes its optimizer shards into the state that rank 0 then completes."""
        optimizer_values = optimizer.state_dict()
        tmp = None
        if sharded:
            tmp = self.dist.on_main(lambda: self.store.begin(step))
            self.store.write_rank_part(tmp, self.dist.rank, sharding.local_optimizer_state(optimizer_values))
            self.dist.barrier()
            optimizer_values = None
        if self.dist.is_main:
            optimizer_state = {"optimizer": optimizer_values, "stage": stage,
                               "scaler": scaler.state_dict() if scaler else None,
                               "torch_rng": torch.get_rng_state()}
            meta = {"step": step, "stage": stage, "stream": batches.stream.state_dict(),
                    "seed": self.cfg.seed, "world_size": self.dist.world_size, "history": history,
                    "config": self.cfg.as_dict(), "skipped": dict(batches.dataset.skipped),
                    "dataset": batches.dataset_info}
            path = self.store.save(step, weights, optimizer_state, meta, tmp)
            log.info("Saved training state %s", path)
        self.dist.barrier()
