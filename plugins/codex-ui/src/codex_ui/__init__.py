"""codex-ui: the web UI of Codex, a Gradio app over the service's /v1 API (`codex ui`)."""

__version__ = "0.1.0"
