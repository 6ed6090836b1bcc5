"""Models on disk: the pretrained starting point, saving and reloading pruned models, portable export.

- ``pretrained`` -- the model and tokenizer named by the config (embedded default, hub id, folder, tiny)
- ``files``      -- a checkpoint folder's files: names, checksums, config, verification
- ``store``      -- ``save_model`` / ``load_model`` (the one way a folder is reloaded), sparse encoding
- ``formats``    -- registry of quantized storage formats, keyed by the config's scheme
- ``portable``   -- which folders stock transformers can load, and making the others fail loudly
"""
