"""Training core for the VideoCrafter family (no ComfyUI imports): text-to-video, DynamiCrafter and VideoCrafter1
image-to-video, each in its family's stages (docs/training.md).

Shared by the `VideoCrafterTrain` / `VideoCrafterTrainI2V` nodes and `scripts/vc_train.py`. The model-building glue
that needs ComfyUI lives in `vc_models/training.py` and is handed to `trainer.train` as an
object (see `trainer.TrainingModels`).
"""
