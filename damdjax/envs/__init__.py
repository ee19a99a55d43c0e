"""The edge model (docs/model.md): instances, generator, pure reset/step, observations.

The reference simulator (`damdjax.envs.reference`) and the instance files
(`damdjax.envs.instance_format`, `instance_io`, `instance_padding`) are plain Python and
import nothing JAX-side.
"""
