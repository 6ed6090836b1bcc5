"""What a pruned model's structure is, and how it is changed.

- ``budget``          -- THE definition of "encoder weights remaining" and budget checks
- ``masks``           -- element-wise masks on the encoder's linear weights
- ``surgery``         -- physical removal of heads, layers and FFN units; recorded ops replayed on load
- ``factorized``      -- low-rank factorized linear layers (FLOP) and their surgery op
- ``hard_concrete``   -- hard-concrete gates shared by the L0 methods
- ``fixed_attention`` -- fixed position-only attention heads and their surgery op
"""
