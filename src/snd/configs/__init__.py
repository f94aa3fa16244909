"""YAML presets shipped with snd (``snd.distill.preset_names()``)."""
