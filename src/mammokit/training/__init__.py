"""Training: losses, the LightningModule, schedules, curriculum stages and checkpoints (the released format is
`mammokit.release`).

Submodules are imported where they are used (`from mammokit.training.losses import MammoLoss`), so importing
this package does not pull in Lightning.
"""
