"""Codex engines for Wan 2.2: TI2V-5B (``wan_ti2v_5b``), T2V-A14B (``wan_t2v_14b``), I2V-A14B (``wan_i2v_14b``)."""
