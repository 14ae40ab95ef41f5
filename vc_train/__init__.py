"""The trainer of every family it takes (VideoCrafter1/2 text-to-video, VideoCrafter1 image-to-video, DynamiCrafter
and its interpolation model), each in its family's stages (docs/training.md).

Shared by the `VideoCrafterTrain` / `VideoCrafterTrainI2V` nodes and `scripts/vc_train.py`. ComfyUI-free except
`comfy_models.py`, the model glue that builds the trainer's `TrainingModels` with ComfyUI's model management and is
handed to `trainer.train` as an object (`trainer.TrainingModels`).
"""
