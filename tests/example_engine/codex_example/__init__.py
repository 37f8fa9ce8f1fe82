"""Example third-party Codex engine ``example_gradient`` (txt2img only, no torch)."""
