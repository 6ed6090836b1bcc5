"""Result records: the one schema every job writes, and where a result came from.

- ``record``     -- schema, validation, atomic writing, per-example predictions
- ``provenance`` -- code version, library versions, hardware, wall time
- ``schemas/``   -- the JSON schema of the result record
"""
