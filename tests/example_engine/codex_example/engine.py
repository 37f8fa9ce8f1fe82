"""The gradient "model": a JSON file holding a base colour. Pure Python and Pillow, no torch."""

import json
import random
from pathlib import Path

from PIL import Image

from codex_core import Engine, ImageOutput, Job, Txt2ImgParams


class GradientTxt2Img(Txt2ImgParams):
    size_multiple = 1  # plain pixels, no latent space: any size


class GradientEngine(Engine):
    key = "example_gradient"
    family = "example"
    description = "Example third-party engine: seeded colour gradients"
    tasks = {"txt2img": GradientTxt2Img}
    model_marker = "gradient.json"
    tiny_version = "1"

    def build_tiny(self, dest: Path) -> None:
        dest.mkdir(parents=True)
        (dest / self.model_marker).write_text(json.dumps({"base": [32, 64, 96]}), encoding="utf-8")

    def load(self, source, runtime) -> dict:
        return json.loads((source.path / self.model_marker).read_text(encoding="utf-8"))

    def run(self, model: dict, job: Job) -> ImageOutput:
        params, rng = job.params, random.Random(job.seed)
        images = []
        with job.timer.stage("denoise"):
            for _ in range(params.batch_size):
                start = [(b + rng.randrange(256)) % 256 for b in model["base"]]
                end = [rng.randrange(256) for _ in range(3)]
                image = Image.new("RGB", (params.width, params.height))
                span = max(params.width + params.height - 2, 1)
                image.putdata([tuple(round(s + (e - s) * (x + y) / span) for s, e in zip(start, end))
                               for y in range(params.height) for x in range(params.width)])
                gamma = job.runtime.gradient_gamma  # the plugin's own run option (plugin.py)
                if gamma != 1.0:
                    image = image.point([round(255 * (level / 255) ** (1 / gamma)) for level in range(256)] * 3)
                images.append(image)
            for k in range(1, params.steps + 1):
                job.progress.step(k, params.steps)
                job.steps_done = k
        return ImageOutput(images)
