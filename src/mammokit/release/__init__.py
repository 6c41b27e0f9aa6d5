"""The release format: what training writes and every consumer (evaluation, predict, export) reads.

`model` (save, load, `resolve_model_dir`), `config_schema` (the declared schema of config.json), `calibration`
(the stored calibration maps), `device` (device and batch helpers) and `store_table` (a store's table and a run's
splits). This room imports only `models`, `data`, `preprocess` and below, never Lightning, `training` or
`evaluation`. Import the submodule you need.
"""
