"""Generation mode: build a diffusers pipeline, apply LoRA checkpoints, generate and cache case images.

Nothing here imports torch or diffusers at package import time (importing diffusers costs ~8 s): the
config models (`settings`) and errors are plain, and the heavy modules (`pipeline`, `lora`, `engine`) import
their libraries when first used, so sample-folder runs and re-judging cached images never pay for them.

Modules: `settings` ([pipeline] config), `errors`, `pipeline` (pipeline class, model folder or hub id,
device/dtype/offload), `lora` (safetensors-only loading, validation against the model, switching),
`cache` (content-addressed image cache under reports/<run>/images/), `engine` (one generator per worker
that turns generated cases into image files).
"""
