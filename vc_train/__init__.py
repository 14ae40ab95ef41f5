"""Training core for the VideoCrafter image-to-video model (no ComfyUI imports).

Shared by the `VideoCrafterTrainI2V` node and `scripts/vc_train.py`. The model-building glue
that needs ComfyUI lives in `vc_models/training.py` and is handed to `trainer.train` as an
object (see `trainer.TrainingModels`).
"""
