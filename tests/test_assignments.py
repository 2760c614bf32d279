"""Classroom assignments: the graded exercises, the student versions and the autograder (sdcourse.grading).

To keep this file quick, the grader runs on trimmed chapters (the Colab setup cell and the graded
exercises, which load the pipeline themselves) and one grading run covers every case at once: per
chapter the solution version, the untouched student version and a version with a planted wrong answer
in every exercise, plus the bad submissions.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from sdcourse import grading

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

# One wrong but runnable answer per exercise (a common mistake); each must lose exactly that exercise's points.
WRONG_ANSWERS = {
    'ch01-ex-01-answer': 'def picture(seed, steps=2):\n    return pipe(PROMPT, height=small, width=small, num_inference_steps=steps, generator=sdcourse.make_generator(0)).images[0]',
    'ch01-ex-02-answer': 'sdcourse.set_scheduler(pipe, "ddim")\ndef step_latents(seed, steps=3):  # always 3 steps\n    seen = []\n    def keep(p, i, t, kwargs):\n        seen.append(kwargs["latents"])\n        return kwargs\n    pipe(PROMPT, height=small, width=small, num_inference_steps=3, generator=sdcourse.make_generator(seed),\n         output_type="latent", callback_on_step_end=keep)\n    return seen',
    'ch02-ex-01-answer': 'def batch(seeds, steps=2):\n    return pipe([PROMPT] * len(seeds), height=small, width=small, num_inference_steps=steps,\n                generator=sdcourse.make_generator(seeds[0])).images',
    'ch02-ex-02-answer': 'def noise_shape(height, width):\n    f = pipe.vae_scale_factor\n    for value in (height, width):\n        if value % f:\n            raise ValueError(f"{value} is not a multiple of {f}")\n    return (1, pipe.unet.config.in_channels, width // f, height // f)',
    'ch03-ex-01-answer': 'def decode(latents):  # the scaling factor not undone\n'
                         '    pixels = ((pipe.vae.decode(latents).sample[0].float() / 2 + 0.5).clamp(0, 1) * 255).round()\n'
                         '    return Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy().astype(np.uint8))',
    'ch03-ex-02-answer': 'from diffusers import DDPMScheduler\nddpm = DDPMScheduler.from_config(pipe.scheduler.config)\ndef clean_guess(noisy, noise_pred, t):  # no square roots\n    a = ddpm.alphas_cumprod[t]\n    return (noisy - (1 - a) * noise_pred) / a',
    'ch04-ex-01-answer': 'from diffusers import LMSDiscreteScheduler\n'
                         'GUIDANCE = sdcourse.klms_guidance(pipe)\n'
                         'pipe.scheduler = LMSDiscreteScheduler.from_config(pipe.scheduler.config)\n'
                         'def hand_loop(prompt, negative, seed=0, steps=3):\n    return pipe(prompt, height=small, width=small, num_inference_steps=steps, guidance_scale=GUIDANCE,\n                generator=sdcourse.make_generator(seed), output_type="latent").images',
    'ch04-ex-02-answer': 'def rescaled_guidance(noise_uncond, noise_text, guidance, rescale):  # one std for the whole batch\n'
                         '    guided = noise_uncond + guidance * (noise_text - noise_uncond)\n'
                         '    return rescale * guided * noise_text.std() / guided.std() + (1 - rescale) * guided',
    'ch05-ex-01-answer': 'from diffusers import DDIMScheduler\n'
                         'ddim = DDIMScheduler.from_config(pipe.scheduler.config)\n'
                         'latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))\n'
                         'noise_pred = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))\n'
                         'def ddim_step(sample, noise_pred, t, t_prev):  # no square roots\n'
                         '    a_t, a_prev = ddim.alphas_cumprod[t], ddim.alphas_cumprod[t_prev]\n'
                         '    x0 = (sample - (1 - a_t) * noise_pred) / a_t\n'
                         '    return a_prev * x0 + (1 - a_prev) * noise_pred',
    'ch05-ex-02-answer': 'def calls_per_picture(name, steps):\n    return steps',
    'ch06-ex-01-answer': 'from diffusers import LMSDiscreteScheduler\n'
                         'sdcourse.set_scheduler(pipe, "ddim")\n'
                         'i2i = sdcourse.img2img_pipeline(pipe)\n'
                         'clean = sdcourse.pil_to_latents(pipe.vae, [sdcourse.load_picture("scene", small)], '
                         'generator=sdcourse.make_generator(0))\n'
                         'noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))\n'
                         'def klms_start(clean, noise, steps, strength):  # DDIM\'s scale, not K-LMS\'s\n'
                         '    solver = LMSDiscreteScheduler.from_config(pipe.scheduler.config)\n'
                         '    solver.set_timesteps(steps)\n'
                         '    t = int(solver.timesteps[steps - int(steps * strength)])\n'
                         '    ab = solver.alphas_cumprod[t]\n'
                         '    return ab.sqrt() * clean + (1 - ab).sqrt() * noise',
    'ch06-ex-02-answer': 'def strength_for_noise(share, steps):  # the variance, not the coefficient\n'
                         '    solver = sdcourse.make_scheduler("ddim", pipe.scheduler.config)\n'
                         '    solver.set_timesteps(steps)\n'
                         '    for k in range(1, steps + 1):\n'
                         '        if float(1 - solver.alphas_cumprod[int(solver.timesteps[steps - k])]) >= share:\n'
                         '            return k / steps\n'
                         '    return None',
    'ch07-ex-01-answer': 'from sdcourse.inpaint import inpaint\n'
                         'picture = sdcourse.load_picture("scene", small)\n'
                         'def outpaint_right(picture, prompt, seed=0, steps=2):  # the mask the wrong way round\n'
                         '    w, h = picture.size\n'
                         '    canvas = Image.new("RGB", (2 * w, h))\n'
                         '    canvas.paste(picture.convert("RGB"), (0, 0))\n'
                         '    mask = Image.new("L", (2 * w, h), 255)\n'
                         '    mask.paste(0, (w, 0, 2 * w, h))\n'
                         '    return inpaint(pipe, canvas, mask, prompt, steps=steps, seed=seed).images[0]',
    'ch07-ex-02-answer': 'def cells_touched(mask):\n    f = pipe.vae_scale_factor\n    pixels = torch.from_numpy((np.asarray(mask.convert("L")) >= 128).astype(np.float32))[None, None]\n    return torch.nn.functional.interpolate(pixels, scale_factor=1 / f, mode="nearest")',
    'ch08-ex-01-answer': 'def seed_walk(seed_a, seed_b, num_frames, steps=2):  # a straight line\n    f = pipe.vae_scale_factor\n    shape = (1, pipe.unet.config.in_channels, small // f, small // f)\n    a, b = (torch.randn(shape, generator=sdcourse.make_generator(s), dtype=pipe.unet.dtype) for s in (seed_a, seed_b))\n    return [pipe(PROMPT, height=small, width=small, num_inference_steps=steps,\n                 latents=sdcourse.lerp(i / (num_frames - 1), a, b)).images[0] for i in range(num_frames)]',
    'ch08-ex-02-answer': 'def prompt_walk(prompt_a, prompt_b, seed, num_frames, steps=2):  # one generator for every frame\n    text_a, empty = pipe.encode_prompt(prompt_a, pipe.device, 1, True)\n    text_b, _ = pipe.encode_prompt(prompt_b, pipe.device, 1, True)\n    generator = sdcourse.make_generator(seed)\n    return [pipe(prompt_embeds=sdcourse.slerp(i / (num_frames - 1), text_a, text_b), negative_prompt_embeds=empty,\n                 height=small, width=small, num_inference_steps=steps, generator=generator).images[0]\n            for i in range(num_frames)]',
    'ch09-ex-01-answer': 'from sdcourse.animation import animate, transform\nfrom sdcourse.course_data import load_picture\nfrom sdcourse.img2img import img2img\nGUIDANCE = 7.5\ndef from_the_start(start, prompt, num_frames, zoom, strength, steps=2, seed=0):  # feeds back after all\n    frames = [start]\n    for i in range(1, num_frames):\n        frames.append(img2img(pipe, transform(frames[-1], zoom=zoom), prompt, strength=strength, steps=steps,\n                              guidance=GUIDANCE, seed=seed + i).images[0])\n    return frames',
    'ch09-ex-02-answer': 'def keyframe_values(keys, num_frames):  # np.interp needs the keys in order\n'
                         '    return [float(v) for v in np.interp(range(num_frames), list(keys), list(keys.values()))]',
    'ch10-ex-01-answer': 'from diffusers import EulerDiscreteScheduler\n\ndef euler_plan(scheduler, steps):  # the scale of the next sigma\n    scheduler.set_timesteps(steps)\n    s = scheduler.sigmas\n    return 1 / (s[1:] ** 2 + 1).sqrt(), s[1:] - s[:-1]',
    'ch10-ex-02-answer': 'layer = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2\ndef first_cross_scores_bytes(width, height):  # self-attention\'s count: positions as keys\n    f = pipe.vae_scale_factor\n    positions = (height // f) * (width // f)\n    return 2 * layer.heads * positions * positions * torch.finfo(pipe.unet.dtype).bits // 8',
    # Chapters 11 and 12: the cell's given lines (imports, settings) stay, only the function is wrong.
    'ch11-ex-01-answer': 'import io\nimport ipywidgets as widgets\ndef png(picture):\n    buffer = io.BytesIO()\n    picture.save(buffer, format="PNG")\n    return buffer.getvalue()\ndef seed_viewer(prompt):  # draws the seed the slider left\n    slider, image = widgets.IntSlider(value=0, min=0, max=99), widgets.Image(format="png")\n    def draw(seed):\n        image.value = png(pipe(prompt, height=small, width=small, num_inference_steps=2,\n                               generator=sdcourse.make_generator(seed)).images[0])\n    slider.observe(lambda change: draw(change["old"]), names="value")\n    draw(0)\n    return slider, image',
    'ch11-ex-02-answer': 'def size_panel(prompt):  # never clears the message\n    side, button = widgets.IntText(value=small), widgets.Button(description="Generate")\n    message, image = widgets.Label(), widgets.Image(format="png")\n    def generate(_):\n        n = side.value\n        if n <= 0 or n % pipe.vae_scale_factor:\n            message.value = f"{n} px is not a positive multiple of {pipe.vae_scale_factor}"\n            return\n        image.value = png(pipe(prompt, height=n, width=n, num_inference_steps=2,\n                               generator=sdcourse.make_generator(0)).images[0])\n    button.on_click(generate)\n    return side, button, message, image',
    'ch12-ex-01-answer': 'from sdcourse.attention import token_index\n\n'
                         'def token_positions(prompt, word):  # counts words, not tokens\n'
                         '    return [i + 1 for i, w in enumerate(prompt.split()) if w == word]',
    'ch12-ex-02-answer': 'from PIL import ImageDraw\n\n'
                         'from sdcourse.attention import AttentionResult, colour_mask, generate_with_maps, mass_inside, token_index\n'
                         'from sdcourse.schedulers import set_scheduler\nfrom sdcourse.shapes import PALETTE\n\n'
                         'set_scheduler(pipe, "ddim")\nMAPS_PROMPT = "a large red circle in the top left on a blue background"\n'
                         'result = generate_with_maps(pipe, MAPS_PROMPT, seed=0, steps=8, progress=False)\n\n'
                         'def lift(result, word, colour):  # forgets the start token: the map of the word before\n'
                         '    i = result.tokens[0][1:-1].index(word)\n    region = colour_mask(result.images[0], colour)\n'
                         '    return mass_inside(result.maps[0, i], region) / region.mean()',
    # Chapter 13: the exercises run on the setup cell's schedule, batch and bundled UNet.
    'ch13-ex-01-answer': 'def noisy(x0, noise, t):  # no square roots\n'
                         '    ab = alphas_cumprod[t].view(-1, 1, 1, 1)\n    return ab * x0 + (1 - ab) * noise',
    'ch13-ex-02-answer': 'ids = train.load_tokenizer()(["a red circle", "", "a large blue square in the top left", '
                         '"a green triangle",\n                              "a small white circle on a black background", ""], '
                         'padding="max_length",\n                             max_length=77, truncation=True, '
                         'return_tensors="pt").input_ids\ntext_embeddings = text_encoder(ids).last_hidden_state\n'
                         'def batch_loss(unet, text_embeddings, x0, noise, t):  # forgets the min-SNR weights\n'
                         '    x_t = schedule.scheduler.add_noise(x0, noise, t)\n'
                         '    pred = unet(x_t, t, encoder_hidden_states=text_embeddings).sample\n'
                         '    return (pred - noise).square().mean()',
    'ch13-ex-03-answer': 'def drop_captions(captions, p, rng):  # drops the whole batch at once\n'
                         '    return [""] * len(captions) if rng.random() < p else list(captions)',
}


def trim(nb):
    """The chapter's first three cells (Colab badge, setup) and its graded exercises."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    nb.cells = nb.cells[:3] + [c for c in nb.cells if "-ex-" in c.get("id", "")]
    return nb


def with_wrong_answers(nb):
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell in nb.cells:
        if cell.get("id") in WRONG_ANSWERS:
            cell.source = WRONG_ANSWERS[cell.id]
    return nb


def chapters():
    return grading.graded_notebooks(NOTEBOOKS)


def optional_challenges(nb) -> list[str]:
    """The answer cells of a notebook's optional challenges: a solution cell under an "### Optional challenge"
    heading, whose check cell (ungraded, every assert in view) follows it."""
    cells, found = nb.cells, []
    for i, cell in enumerate(cells):
        if not cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            continue
        heading = next((c.source for c in reversed(cells[:i]) if c.cell_type == "markdown"), "")
        if heading.startswith("### Optional challenge"):
            check = cells[i + 1]
            assert check.id == cell.id.replace("-answer", "-check") and "nbgrader" not in check.get("metadata", {})
            assert "assert " in check.source and "HIDDEN TESTS" not in check.source and "(no points)" in heading
            found.append(cell.id)
    return found


def test_chapter_10_has_an_optional_challenge():
    nb = nbformat.read(str(NOTEBOOKS / "10_speed_and_memory.ipynb"), as_version=4)
    assert optional_challenges(nb) == ["ch10-ex-03-answer"]
    assert "ch10-ex-03-check" not in {e.grade_id for e in grading.exercises(nb)}


def test_every_chapter_has_two_graded_exercises_with_a_planted_wrong_answer():
    paths = chapters()
    assert [p.name[:2] for p in paths] == [f"{i:02d}" for i in range(1, 14)]
    for path in paths:
        nb = nbformat.read(str(path), as_version=4)
        found = grading.exercises(path)
        assert len(found) >= 2, path.name
        graded = {e.grade_id.replace("-check", "-answer") for e in found}
        answers = [c.id for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("solution")]
        assert set(answers) - graded == set(optional_challenges(nb)), f"{path.name}: an answer cell without a graded check"
        assert graded <= set(WRONG_ANSWERS) and graded <= set(answers), path.name
        ids = [c.id for c in nb.cells]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate cell ids"


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    start = time.perf_counter()
    written = grading.make_student_versions(NOTEBOOKS, out)
    print(f"student versions of {len(written)} chapters: {time.perf_counter() - start:.1f} s")
    return out


def test_student_versions_hide_solutions_and_hidden_tests(student_dir):
    for source in chapters():
        student = nbformat.read(str(student_dir / source.name), as_version=4)
        src = nbformat.read(str(source), as_version=4)
        text = json.dumps([c.source for c in student.cells])
        assert "BEGIN HIDDEN TESTS" not in text and "BEGIN SOLUTION" not in text, source.name
        for cell in src.cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("grade"):  # no line of a hidden test survives anywhere in the student file
                hidden = cell.source.split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0]
                for line in filter(None, (l.strip() for l in hidden.splitlines())):
                    if line not in ("else:", "try:") and not line.startswith(("for ", "except")):
                        assert line not in text, f"{source.name}: hidden test line {line!r} in the student file"
        assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code"), "outputs not cleared"
        assert "colab-badge" in student.cells[0].source and "google.colab" in student.cells[2].source
        public = [c for c in student.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade")]
        assert public and all("assert" in c.source for c in public), "public checks missing"
        answers = [c for c in student.cells if c.get("metadata", {}).get("nbgrader", {}).get("solution")]
        optional = optional_challenges(student)
        assert len(answers) == len(public) + len(optional) and all("raise NotImplementedError()" in c.source for c in answers)


VANDAL = """\
import pathlib, shutil, subprocess
for above in pathlib.Path.cwd().resolve().parents:
    if (above / "gradebook.db").exists():
        (above / "gradebook.db").write_bytes(b"")
        shutil.rmtree(above / "source", ignore_errors=True)
        break
subprocess.Popen(["sleep", "600"])  # left running in the background
for other in ("wrong", "zoë"):  # the notebooks of students graded after it, by the path a classmate could know
    shutil.rmtree(pathlib.Path(SUBMISSIONS) / other, ignore_errors=True)
for attempt in (lambda: pathlib.Path(OUT, "gradebook.csv").unlink(missing_ok=True),
                lambda: pathlib.Path(SUBMISSIONS, "vandal-was-here.txt").write_text("x")):
    try:
        attempt()
    except OSError:  # the sandbox's read-only file system
        pass
"""


ODD = {  # what a student's answer cell does first: (the chapter it is in, the code)
    "exits": ("02_seeds_and_grids.ipynb", "import sys\nsys.exit(1)\n"),
    "prints 10 MB": ("05_schedulers.ipynb", "print('x' * 10_000_000)\n"),
    "imports what does not exist": ("09_animation.ipynb", "import a_module_that_does_not_exist\n"),
}


@pytest.fixture(scope="module")
def graded(student_dir, tmp_path_factory):
    subs = tmp_path_factory.mktemp("submissions")
    for source in chapters():
        nb = nbformat.read(str(source), as_version=4)
        for who, version in (("solution", trim(nb)), ("wrong", with_wrong_answers(trim(nb))),
                             ("untouched", trim(nbformat.read(str(student_dir / source.name), as_version=4)))):
            (subs / who).mkdir(exist_ok=True)
            nbformat.write(version, str(subs / who / source.name))
    # Bad submissions, each in a chapter whose other exercises still show what they can.
    (subs / "bad").mkdir()
    (subs / "bad" / "08_dream.ipynb").write_text("this is not a notebook")
    raising = trim(nbformat.read(str(NOTEBOOKS / "09_animation.ipynb"), as_version=4))
    first = next(c for c in raising.cells if c.get("id") == "ch09-ex-01-answer")
    first.source = "raise RuntimeError('oops')\n" + first.source  # the function is never defined
    nbformat.write(raising, str(subs / "bad" / "09_animation.ipynb"))
    deleted = trim(nbformat.read(str(NOTEBOOKS / "10_speed_and_memory.ipynb"), as_version=4))
    deleted.cells = [c for c in deleted.cells if c.get("id") != "ch10-ex-01-check"]
    nbformat.write(deleted, str(subs / "bad" / "10_speed_and_memory.ipynb"))
    (subs / "bad" / "notes.txt").write_text("not a chapter")
    no_checks = trim(nbformat.read(str(NOTEBOOKS / "03_inside_the_pipeline.ipynb"), as_version=4))
    no_checks.cells = [c for c in no_checks.cells if not c.get("id", "").endswith("-check")]  # every check cell
    nbformat.write(no_checks, str(subs / "bad" / "03_inside_the_pipeline.ipynb"))
    # Submissions that misbehave in their first answer cell: the first exercise gets 0, the second its points.
    for chapter, code in ODD.values():
        nb = trim(nbformat.read(str(NOTEBOOKS / chapter), as_version=4))
        answer = next(c for c in nb.cells if c.get("id", "").endswith("-ex-01-answer"))
        answer.source = code + answer.source
        (subs / "odd").mkdir(exist_ok=True)
        nbformat.write(nb, str(subs / "odd" / chapter))
    # Folder names that nbgrader cannot take as student ids, and folders with nothing to grade.
    first = trim(nbformat.read(str(NOTEBOOKS / "01_pipeline.ipynb"), as_version=4))
    for who in ("zoë", "bad name"):
        (subs / who).mkdir()
        nbformat.write(first, str(subs / who / "01_pipeline.ipynb"))
    # A student whose code empties the gradebook database and deletes the sources it finds above it, deletes the
    # notebooks of the students graded after it ("wrong", "zoë") and the gradebook written so far: they must keep
    # their grades, and the gradebook must hold every student.
    vandal = trim(nbformat.read(str(NOTEBOOKS / "01_pipeline.ipynb"), as_version=4))
    answer = next(c for c in vandal.cells if c.get("metadata", {}).get("nbgrader", {}).get("solution"))
    out = tmp_path_factory.mktemp("grades")
    answer.source = f"SUBMISSIONS, OUT = {str(subs)!r}, {str(out)!r}\n" + VANDAL + answer.source
    (subs / "vandal").mkdir()
    nbformat.write(vandal, str(subs / "vandal" / "01_pipeline.ipynb"))
    (subs / "empty").mkdir()
    (subs / "notes only").mkdir()
    (subs / "notes only" / "readme.md").write_text("no notebook here")
    start = time.perf_counter()
    count = len(list(subs.rglob('*.ipynb')))
    rows = grading.grade(subs, out, NOTEBOOKS, notebook_timeout=300, cell_timeout=240, progress=False, jobs=2)
    print(f"graded {count} notebooks: {time.perf_counter() - start:.1f} s")
    return rows, out, subs


def test_solutions_get_full_marks(graded):
    rows, *_ = graded
    # two jobs at a time, yet the gradebook keeps the order of one: students by name, then chapters
    order = [(r.student, r.chapter) for r in rows]
    assert order == sorted(order)
    assert {r.student for r in rows} == {"bad", "bad name", "empty", "notes only", "odd", "solution", "untouched",
                                         "vandal", "wrong", "zoë"}
    mine = [r for r in rows if r.student == "solution"]
    assert len(mine) == sum(len(grading.exercises(p)) for p in chapters())
    assert all(r.points == r.max_points > 0 for r in mine), [(r.exercise, r.note) for r in mine if r.points < r.max_points]


def test_untouched_student_versions_get_zero(graded):
    rows, *_ = graded
    mine = [r for r in rows if r.student == "untouched"]
    assert len(mine) == sum(len(grading.exercises(p)) for p in chapters())
    assert all(r.points == 0 and "NotImplementedError" in r.note for r in mine), [(r.exercise, r.note) for r in mine]


def test_each_planted_wrong_answer_loses_exactly_its_points(graded):
    rows, *_ = graded
    mine = [r for r in rows if r.student == "wrong"]
    assert len(mine) == len(WRONG_ANSWERS)
    for r in mine:
        assert r.points == 0 and r.note, f"{r.exercise}: the wrong answer was not caught"
        assert r.exercise.replace("-check", "-answer") in WRONG_ANSWERS


def test_bad_submissions_get_zero_with_a_reason_and_grading_goes_on(graded):
    rows, out, _ = graded
    bad = {r.exercise: r for r in rows if r.student == "bad"}
    assert all(bad[f"ch08-ex-0{k}-check"].points == 0 and "not a readable notebook" in bad[f"ch08-ex-0{k}-check"].note
               for k in (1, 2))
    assert bad["ch09-ex-01-check"].points == 0 and "load_picture" in bad["ch09-ex-01-check"].note  # its answer cell never ran
    assert bad["ch09-ex-02-check"].points == bad["ch09-ex-02-check"].max_points  # the rest still counts
    assert bad["ch10-ex-01-check"].points == 0 and "deleted" in bad["ch10-ex-01-check"].note
    assert bad["ch10-ex-02-check"].points == bad["ch10-ex-02-check"].max_points
    feedback = (out / "feedback" / "bad.md").read_text()
    assert "not a readable notebook" in feedback and "notes.txt" in feedback and "Total:" in feedback
    with open(out / "gradebook.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and set(table[0]) >= {"student", "chapter", "exercise", "points"}
    summary = grading.summary_table(rows)
    assert "solution" in summary and "ch10" in summary
    deleted = [r for r in rows if r.student == "bad" and r.chapter == "ch03"]
    assert deleted and all(r.points == 0 and f"check cell {r.exercise} was deleted" in r.note for r in deleted)


@pytest.mark.parametrize("case", ODD, ids=list(ODD))
def test_a_misbehaving_answer_costs_only_its_own_points(graded, case):
    rows, *_ = graded
    chapter = "ch" + ODD[case][0][:2]
    mine = {r.exercise: r for r in rows if r.student == "odd" and r.chapter == chapter}
    assert set(mine) == {f"{chapter}-ex-01-check", f"{chapter}-ex-02-check"}, mine
    second = mine[f"{chapter}-ex-02-check"]
    assert second.points == second.max_points > 0, second
    first = mine[f"{chapter}-ex-01-check"]
    if case == "prints 10 MB":  # printing is no error: the answer after it is right
        assert first.points == first.max_points, first
    else:  # the answer's function was never defined: 0, and the check's error says so
        assert first.points == 0 and "is not defined" in first.note, first


def test_every_student_folder_is_in_the_gradebook_and_the_table(graded):
    rows, out, _ = graded
    for who in ("zoë", "bad name"):  # not usable as nbgrader ids: graded under a stand-in id, shown by name
        mine = [r for r in rows if r.student == who]
        assert mine and all(r.points == r.max_points > 0 for r in mine), [(r.exercise, r.note) for r in mine]
        assert (out / "feedback" / f"{who}.md").is_file()
    empty = {r.student: r for r in rows if r.chapter == "-"}
    assert set(empty) == {"empty", "notes only"}
    assert "the folder is empty" in empty["empty"].note and "readme.md" in empty["notes only"].note
    with open(out / "gradebook.csv", encoding="utf-8") as f:
        assert {row["student"] for row in csv.DictReader(f)} == {r.student for r in rows}
    table = grading.summary_table(rows).splitlines()
    assert {line.split("  ")[0].strip() for line in table[1:]} == {r.student for r in rows}
    assert " - " not in table[0]  # no column for "nothing graded"


def test_a_student_who_destroys_the_gradebook_hurts_nobody_else(graded):
    rows, out, subs = graded
    vandal = [r for r in rows if r.student == "vandal"]  # its own grading broke in its own folder: 0, said why
    assert vandal and all(r.points == 0 and "could not run it" in r.note for r in vandal), vandal
    later = [r for r in rows if r.student in ("wrong", "zoë")]  # graded after it, in the course folder it emptied
    assert later and all(r.points == r.max_points or r.exercise.replace("-check", "-answer") in WRONG_ANSWERS
                         for r in later), [(r.student, r.exercise, r.note) for r in later if r.points < r.max_points]
    assert {r.student for r in later} == {"wrong", "zoë"}
    with open(out / "gradebook.csv", encoding="utf-8") as f:  # deleted by the vandal, written again after it
        assert {row["student"] for row in csv.DictReader(f)} >= {"vandal", "wrong", "zoë"}
    if grading.sandbox_available():  # nothing outside its own course folder changed
        assert (subs / "wrong" / "01_pipeline.ipynb").exists() and not (subs / "vandal-was-here.txt").exists()
    else:  # the vandal did delete them: they were graded from the copy read before it ran
        assert not (subs / "wrong").exists()
    left = subprocess.run(["pgrep", "-f", "^sleep 600$"], capture_output=True, text=True).stdout.split()
    assert not left, f"a student's background process outlived grading: {left}"


@pytest.mark.skipif(not grading.sandbox_available(), reason="the sandbox needs Linux with unshare")
def test_the_sandbox_lets_a_submission_write_only_its_own_folder(tmp_path):
    inside, outside = tmp_path / "course", tmp_path / "teacher"
    inside.mkdir(), outside.mkdir()
    (outside / "marks.csv").write_text("ada,10\n")
    code = (f"import pathlib, shutil\n"
            f"pathlib.Path({str(inside)!r}, 'answer.txt').write_text('42')\n"
            f"for act in (lambda: pathlib.Path({str(outside)!r}, 'marks.csv').write_text('ada,0'),\n"
            f"            lambda: shutil.rmtree({str(outside)!r}),\n"
            f"            lambda: pathlib.Path.home().joinpath('sandbox-test.txt').write_text('x')):\n"
            f"    try:\n        act()\n        print('changed')\n    except OSError as err:\n"
            f"        print(type(err).__name__, err.errno)\n")
    done = subprocess.run([*grading.SANDBOX_COMMAND, str(inside), str(tmp_path / "no-cache"), sys.executable, "-c",
                           code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["OSError 30"] * 3, done.stdout  # EROFS: read-only file system
    assert (inside / "answer.txt").read_text() == "42"
    assert (outside / "marks.csv").read_text() == "ada,10\n" and not (Path.home() / "sandbox-test.txt").exists()


def test_grading_against_the_learners_copies_is_refused(tmp_path):
    (tmp_path / "subs" / "ada").mkdir(parents=True)
    with pytest.raises(ValueError, match="hold no hidden tests .* --source notebooks"):
        grading.grade(tmp_path / "subs", tmp_path / "out", ROOT / "chapters", progress=False)
    assert not (tmp_path / "out" / "gradebook.csv").exists()


def test_the_gradebook_is_written_as_each_notebook_is_graded(tmp_path, monkeypatch):
    subs = tmp_path / "subs"
    for who in ("ada", "bob"):
        (subs / who).mkdir(parents=True)
        shutil.copy(NOTEBOOKS / "01_pipeline.ipynb", subs / who / "01_pipeline.ipynb")
    graded_so_far = []

    def fake_grade_one(course, student, path, source, *args):
        if graded_so_far:
            raise KeyboardInterrupt  # the teacher presses Ctrl-C while the second student is graded
        graded_so_far.append(student)
        return [grading.Row(student, "ch01", "ch01-ex-01-check", 2.0, 2.0, "")]

    monkeypatch.setattr(grading, "_grade_one", fake_grade_one)
    with pytest.raises(KeyboardInterrupt):
        grading.grade(subs, tmp_path / "out", NOTEBOOKS, progress=False)
    with open(tmp_path / "out" / "gradebook.csv") as f:
        assert [(r["student"], r["points"]) for r in csv.DictReader(f)] == [("ada", "2")]


def test_an_endless_loop_hits_the_time_limit(tmp_path):
    nb = trim(nbformat.read(str(NOTEBOOKS / "09_animation.ipynb"), as_version=4))
    answer = next(c for c in nb.cells if c.get("id") == "ch09-ex-01-answer")  # a student's cell, kept by the grader
    answer.source = "while True:\n    pass\n" + answer.source
    (tmp_path / "subs" / "looper").mkdir(parents=True)
    nbformat.write(nb, str(tmp_path / "subs" / "looper" / "09_animation.ipynb"))
    start = time.perf_counter()
    rows = grading.grade(tmp_path / "subs", tmp_path / "out", NOTEBOOKS, notebook_timeout=300, cell_timeout=5,
                         progress=False)
    assert time.perf_counter() - start < 200
    looping = next(r for r in rows if r.exercise == "ch09-ex-01-check")
    assert looping.points == 0 and "time limit" in looping.note, looping
    rows = grading.grade(tmp_path / "subs", tmp_path / "out", NOTEBOOKS, notebook_timeout=15, cell_timeout=600,
                         progress=False)
    assert rows and all(r.points == 0 and "time limit" in r.note for r in rows), [(r.exercise, r.note) for r in rows]


def test_an_output_folder_inside_the_submissions_is_not_a_student(tmp_path):
    (tmp_path / "subs" / "ada").mkdir(parents=True)
    (tmp_path / "subs" / "ada" / "notes.txt").write_text("no notebook")
    for _ in range(2):  # the second time, subs/grades exists and holds a gradebook
        rows = grading.grade(tmp_path / "subs", tmp_path / "subs" / "grades", NOTEBOOKS, progress=False)
        assert [r.student for r in rows] == ["ada"] and "notes.txt" in rows[0].note
    with pytest.raises(ValueError, match="is the submissions folder itself"):
        grading.grade(tmp_path / "subs", tmp_path / "subs", NOTEBOOKS)


def test_bad_arguments_are_refused_in_one_sentence(tmp_path):
    (tmp_path / "subs" / "ada").mkdir(parents=True)
    for jobs, error in ((0, ValueError), (2.5, TypeError)):
        with pytest.raises(error, match="jobs must be"):
            grading.grade(tmp_path / "subs", tmp_path / "out", NOTEBOOKS, jobs=jobs)
    with pytest.raises(ValueError, match="submissions="):
        grading.grade(tmp_path / "nowhere", tmp_path / "out", NOTEBOOKS)
    with pytest.raises(ValueError, match="not a chapter notebook name"):
        grading.chapter_of("notes.ipynb")


def test_the_grading_command_refuses_bad_jobs_in_one_line(tmp_path, capsys):
    (tmp_path / "subs" / "ada").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        grading.main(["grade", str(tmp_path / "subs"), "--source", str(NOTEBOOKS), "--jobs", "0"])
    assert exit_info.value.code == 2 and "jobs must be" in capsys.readouterr().err


def test_processes_a_graded_notebook_leaves_behind_are_ended():
    marker = f"test-{time.monotonic_ns()}"
    left = subprocess.Popen(["sleep", "600"], env={**os.environ, "SDCOURSE_GRADING": marker}, start_new_session=True)
    other = subprocess.Popen(["sleep", "600"])  # not the grader's: left alone
    try:
        grading._end_leftovers(marker)
        assert left.wait(timeout=10) == -9
        assert other.poll() is None
    finally:
        for proc in (left, other):
            proc.kill()
            proc.wait()
