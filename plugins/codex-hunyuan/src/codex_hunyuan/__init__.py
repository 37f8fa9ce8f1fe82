"""Codex engines for HunyuanVideo (``hunyuan_video``) and HunyuanVideo 1.5 (``hunyuan_video_15``)."""
