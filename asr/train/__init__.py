"""`asr train`: typed YAML recipes, a readable training loop (asr/train/loop.py) with joint
CTC/attention loss, dynamic rotary base adjustment, exact resume, DDP under torchrun and
WER-tracked validation."""
