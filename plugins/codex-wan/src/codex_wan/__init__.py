"""Codex engines for Wan: Wan 2.2 TI2V-5B (``wan_ti2v_5b``), T2V-A14B (``wan_t2v_14b``), I2V-A14B (``wan_i2v_14b``,
also first/last frame) and Wan 2.1 VACE (``wan_vace``)."""
