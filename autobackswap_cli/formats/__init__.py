"""The files the tool reads and writes between steps, one module a format: ``label_format`` (LABELS' grids and
``labels.json``, the reference ``masks.csv`` strings), ``mask_quality`` (MASKS/mask_quality.csv), ``mask_thresholds``
(the loose / tight thresholds a MASKS folder records), ``manifest`` (compose's manifest and journal), ``tarshards``
(WebDataset tar shards), ``model_files`` (safetensors model files) and ``descriptions`` (the validators of every
description read back)."""
