"""The Multiverse inference engine: branches forked on shared prefix KV, merged exactly, decoded together.

Reading order: config -> kv_pool -> branch -> request -> attention (the HF seam) -> runner -> sampling/stops
-> scheduler -> api. `engine.api.MultiverseLM` is the public entry point (also `multiverse.MultiverseLM`).
"""
