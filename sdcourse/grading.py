"""Classroom assignments: student versions of the chapter notebooks, and an autograder.

Both are thin wrappers around `nbgrader <https://nbgrader.readthedocs.io>`_, run on one machine
in a throw-away nbgrader course folder (no JupyterHub, no Docker, no network):

    python -m sdcourse.grading student                 # notebooks/ -> student/ (one file per chapter)
    python -m sdcourse.grading grade submissions/      # -> grades/gradebook.csv, grades/feedback/*.md
    python -m sdcourse.grading grade submissions/ --jobs 2   # two notebooks at a time

A chapter's graded exercises are the nbgrader cells at the end of its notebook: an answer cell whose
``### BEGIN SOLUTION`` ... ``### END SOLUTION`` part the student version replaces with
``raise NotImplementedError()``, and a locked check cell worth some points whose public asserts
stay in the student version while its ``### BEGIN HIDDEN TESTS`` part is removed (and put back when
grading). Submissions are laid out one folder per student: ``submissions/<student>/NN_name.ipynb``.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .validate import check_int, check_path, check_seconds, check_writable_dir

CHAPTER_FILE = re.compile(r"^(\d\d)_[A-Za-z0-9_]+\.ipynb$")
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEFAULT_NOTEBOOK_TIMEOUT = 300  # seconds for a whole submitted notebook
DEFAULT_CELL_TIMEOUT = 120  # seconds for one cell
HIDDEN_TESTS = "### BEGIN HIDDEN TESTS"


@dataclass
class Exercise:
    """One graded exercise of a chapter: its check cell's id and what it is worth."""
    chapter: str
    grade_id: str
    points: float


@dataclass
class Row:
    """One line of the gradebook."""
    student: str
    chapter: str
    exercise: str
    points: float
    max_points: float
    note: str = ""


def chapter_of(name: str) -> str:
    """The assignment name of a chapter notebook's file name: ``"04_klms_loop_by_hand.ipynb"`` -> ``"ch04"``."""
    match = CHAPTER_FILE.match(check_path(name, "name", "04_klms_loop_by_hand.ipynb").name)
    if not match:
        raise ValueError(f"{name!r} is not a chapter notebook name "
                         "(expected NN_name.ipynb, e.g. 04_klms_loop_by_hand.ipynb)")
    return f"ch{match.group(1)}"


def exercises(notebook) -> list[Exercise]:
    """The graded check cells of a notebook (a path or an ``nbformat`` notebook), in order."""
    nb = nbformat.read(str(notebook), as_version=4) if isinstance(notebook, (str, Path)) else notebook
    chapter = chapter_of(notebook) if isinstance(notebook, (str, Path)) else ""
    found = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and cell.cell_type == "code":
            found.append(Exercise(chapter, meta["grade_id"], float(meta.get("points", 0))))
    return found


def graded_notebooks(source_dir: str | Path = "notebooks") -> list[Path]:
    """The chapter notebooks in ``source_dir`` that have graded exercises (at least one, else ``ValueError``)."""
    source_dir = check_path(source_dir, "source_dir", "notebooks")
    if not source_dir.is_dir():
        raise ValueError(f"source_dir={str(source_dir)!r} is not a folder of chapter notebooks")
    found = []
    for path in sorted(source_dir.glob("*.ipynb")):
        if not CHAPTER_FILE.match(path.name):
            continue
        try:
            graded = exercises(path)
        except Exception as exc:  # not JSON, not a notebook
            raise ValueError(f"source_dir={str(source_dir)!r} holds {path.name}, which is not a readable notebook "
                             f"({type(exc).__name__}); fix or remove it") from None
        if graded:
            found.append(path)
    if not found:
        raise ValueError(f"source_dir={str(source_dir)!r} has no chapter notebook with graded exercises "
                         f"(NN_name.ipynb with nbgrader check cells), e.g. the course's notebooks/ folder")
    return found


def check_hidden_tests(sources: list[Path]) -> None:
    """Refuse sources without hidden tests (the learners' copies in chapters/): graded against them, a wrong
    answer that passes the public check would get full marks."""
    without = [p.name for p in sources if HIDDEN_TESTS not in p.read_text(encoding="utf-8")]
    if without:
        names = ", ".join(without[:3]) + (" ..." if len(without) > 3 else "")
        raise ValueError(f"{names} in {sources[0].parent.name}/ hold no hidden tests (they look like the learners' "
                         f"copies); grading against them would give wrong answers full marks. Grade against the "
                         f"instructor sources, e.g. --source notebooks")


# The sandbox a submission's kernel runs in (Linux): a mount namespace of its own, made by `unshare` as an
# unprivileged user namespace, where every file system is read-only but the notebook's course folder, a private
# /dev/shm and the Hugging Face cache (so that a cached Stable Diffusion loads as it does outside). "$1" is the
# course folder, "$2" the cache folder, the rest the command.
SANDBOX = r"""set -e
course="$1"; cache="$2"; shift 2
mount --make-rprivate /
cut -d' ' -f5 /proc/self/mountinfo | sort -r | while read -r point; do
  mount -o remount,bind,ro "$point" 2>/dev/null || true
done
touch / 2>/dev/null && { echo "the sandbox could not make the file system read-only" >&2; exit 97; }
mount -t tmpfs tmpfs /dev/shm 2>/dev/null || true
mount --bind "$course" "$course" && mount -o remount,bind,rw "$course"
if [ -d "$cache" ]; then mount --bind "$cache" "$cache" && mount -o remount,bind,rw "$cache"; fi
exec "$@"
"""
SANDBOX_COMMAND = ["unshare", "--mount", "--map-root-user", "--fork", "--kill-child", "sh", "-c", SANDBOX, "sandbox"]


@functools.lru_cache(maxsize=1)
def sandbox_available() -> bool:
    """Can submissions run in the read-only sandbox here? (Linux with ``unshare`` and user namespaces.)"""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory(prefix="sdcourse-sandbox-") as tmp:
        try:
            done = subprocess.run([*SANDBOX_COMMAND, tmp, tmp, "sh", "-c", f"touch '{tmp}/inside'"],
                                  capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0 and (Path(tmp) / "inside").exists()


def _hf_cache() -> str:
    """The Hugging Face cache folder (``HF_HOME``, or ``~/.cache/huggingface``)."""
    return os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                      os.path.expanduser("~/.cache"), "huggingface")


def _nbgrader(course: Path, *args: str, timeout: float | None = None,
              threads: int | None = None, sandbox: bool = False) -> subprocess.CompletedProcess:
    """Run one nbgrader command on ``course``; ``threads`` caps the CPU threads of the kernel it starts;
    ``sandbox`` runs it where nothing but ``course`` (and the Hugging Face cache) can be written."""
    cmd = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course}",
           f"--CourseDirectory.db_url=sqlite:///{course / 'gradebook.db'}", "--log-level=WARN"]
    env = dict(os.environ)  # nbgrader runs the `alembic` command of its own environment
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if threads is not None:  # torch reads it when the kernel imports it
        env["OMP_NUM_THREADS"] = str(threads)
    if sandbox:  # what Jupyter, IPython and matplotlib write goes inside the course folder
        for name, sub in (("TMPDIR", "tmp"), ("IPYTHONDIR", "ipython"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                          ("MPLCONFIGDIR", "matplotlib")):
            (course / ".home" / sub).mkdir(parents=True, exist_ok=True)
            env[name] = str(course / ".home" / sub)
        cmd = [*SANDBOX_COMMAND, str(course), _hf_cache(), *cmd]
    env["SDCOURSE_GRADING"] = f"{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"  # marks its processes
    # A session of its own, so that a time-out ends nbgrader AND the kernel it started (a student's endless loop).
    with subprocess.Popen(cmd, cwd=course, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        finally:  # whatever a student's code left running in the background (a `sleep 600 &`) ends here too
            _end_leftovers(env["SDCOURSE_GRADING"])
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _end_leftovers(marker: str) -> None:
    """End every process that still carries this nbgrader run's marker in its environment (Linux's /proc;
    elsewhere nothing). The kernel starts in a session of its own, so a process group would not reach it."""
    needle = f"SDCOURSE_GRADING={marker}".encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError, ValueError):
            if needle in environ.read_bytes().split(b"\0"):
                os.kill(int(environ.parent.name), signal.SIGKILL)


def _release(course: Path, notebooks: list[Path]) -> None:
    """Copy the source notebooks into the course folder and run ``nbgrader generate_assignment`` on each."""
    for path in notebooks:
        chapter = chapter_of(path.name)
        (course / "source" / chapter).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, course / "source" / chapter / path.name)
        done = _nbgrader(course, "generate_assignment", chapter, "--force", "--create")
        if done.returncode != 0:
            raise RuntimeError(f"nbgrader could not make the student version of {path.name}:\n{done.stderr[-2000:]}")


def make_student_versions(source_dir: str | Path = "notebooks", out_dir: str | Path = "student",
                          notebooks: list[str | Path] | None = None) -> list[Path]:
    """Write the student version of every graded chapter notebook into ``out_dir``.

    Solutions and hidden tests are removed, public checks kept, outputs cleared; the Colab badge and
    the setup cell are ordinary cells and stay. ``out_dir`` must not be the folder of the notebooks
    (the student versions would overwrite the solutions). Returns the paths written.
    """
    paths = _check_notebooks(notebooks) if notebooks else graded_notebooks(source_dir)
    _check_not_overwriting(out_dir, paths)
    out_dir = check_writable_dir(out_dir, "out_dir", "student")
    written = []
    with tempfile.TemporaryDirectory(prefix="sdcourse-nbgrader-") as tmp:
        course = Path(tmp)
        _release(course, paths)
        for path in paths:
            released = course / "release" / chapter_of(path.name) / path.name
            target = out_dir / path.name
            shutil.copy(released, target)
            written.append(target)
    return written


REPO_BLOB = "https://github.com/sdcourse/sdcourse/blob/main"
SOLUTION_BLOCK = re.compile(r"^([ \t]*)### BEGIN SOLUTION\n(.*?)^[ \t]*### END SOLUTION\n?", re.S | re.M)
HIDDEN_BLOCK = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS\n.*?^[ \t]*### END HIDDEN TESTS\n?", re.S | re.M)


def _is_graded(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return bool(meta.get("solution") or meta.get("grade"))


def solutions_page(notebook, name: str) -> str:
    """A Markdown page of the worked solutions of a chapter notebook's graded exercises: each exercise's
    statement (the Markdown cell above its answer cell) and the answer cell with the solution filled in and the
    nbgrader markers taken out. No hidden test is on it."""
    nb = nbformat.read(str(notebook), as_version=4) if isinstance(notebook, (str, Path)) else notebook
    title = next((line[2:] for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                  if line.startswith("# ")), name)
    parts = [f"# Worked solutions: {title}", "",
             f"The graded exercises of [{name}](../chapters/{name}), answered. Try each one before you read its "
             "answer: the check cell under it in the notebook tells you whether yours is right.", ""]
    for i, cell in enumerate(nb.cells):
        if not cell.get("metadata", {}).get("nbgrader", {}).get("solution") or cell.cell_type != "code":
            continue
        statement = next((c.source for c in reversed(nb.cells[:i]) if c.cell_type == "markdown"), "")
        statement = re.sub(r"^#+ ", "## ", statement.strip(), count=1)
        code = SOLUTION_BLOCK.sub(lambda m: m.group(2), cell.source).rstrip()
        parts += [statement, "", "```python", code, "```", ""]
    return "\n".join(parts)


def _learner_copy(released, source, out_name: str, name: str, solutions_link: bool = True) -> None:
    """Turn nbgrader's student version ``released`` (outputs cleared) into the learner's copy, in place: every
    teaching cell gets its outputs back from ``source`` (matched by cell id), the graded cells stay empty, the
    Colab badge opens this copy, and (with ``solutions_link``) the graded exercises' heading links the worked
    solutions."""
    by_id = {c.get("id"): c for c in source.cells}
    for cell in released.cells:
        original = by_id.get(cell.get("id"))
        if cell.cell_type == "code" and original is not None and not _is_graded(cell):
            cell.outputs = original.get("outputs", [])
            cell.execution_count = original.get("execution_count")
        if cell.cell_type == "markdown":
            cell.source = cell.source.replace("sdcourse/sdcourse/blob/main/notebooks/",
                                              f"sdcourse/sdcourse/blob/main/{out_name}/")
            if solutions_link and cell.source.startswith("## Graded exercises"):
                cell.source += (f"\n\nStuck? The worked solutions are on a page of their own: "
                                f"[solutions/{Path(name).stem}.md]({REPO_BLOB}/solutions/{Path(name).stem}.md).")


def make_learner_copies(source_dir: str | Path = "notebooks", out_dir: str | Path = "chapters",
                        solutions_dir: str | Path | None = "solutions",
                        notebooks: list[str | Path] | None = None) -> list[Path]:
    """Write what a learner opens: each graded chapter notebook without its solutions and hidden tests, with
    every teaching cell's outputs kept, into ``out_dir``; and its worked solutions, as a page of their own, into
    ``solutions_dir``. With ``solutions_dir=None`` (a teacher's class copies) no solutions page is written and
    the copies do not link one. ``source_dir`` holds the instructor's notebooks (solutions, hidden tests,
    outputs). Returns the notebooks written."""
    paths = _check_notebooks(notebooks) if notebooks else graded_notebooks(source_dir)
    _check_not_overwriting(out_dir, paths)
    out_dir = check_writable_dir(out_dir, "out_dir", "chapters")
    if solutions_dir is not None:
        solutions_dir = check_writable_dir(solutions_dir, "solutions_dir", "solutions")
    written = []
    with tempfile.TemporaryDirectory(prefix="sdcourse-nbgrader-") as tmp:
        course = Path(tmp)
        _release(course, paths)
        for path in paths:
            source = nbformat.read(path, as_version=4)
            released = nbformat.read(course / "release" / chapter_of(path.name) / path.name, as_version=4)
            _learner_copy(released, source, Path(out_dir).name, path.name, solutions_link=solutions_dir is not None)
            target = out_dir / path.name
            nbformat.write(released, target)
            if solutions_dir is not None:
                (solutions_dir / (path.stem + ".md")).write_text(solutions_page(source, path.name), encoding="utf-8")
            written.append(target)
    return written


def _check_notebooks(notebooks) -> list[Path]:
    paths = [check_path(p, f"notebooks[{i}]", "notebooks/06_img2img.ipynb") for i, p in enumerate(notebooks)]
    for i, path in enumerate(paths):
        chapter_of(path)
        if not path.is_file():
            raise ValueError(f"notebooks[{i}]={str(path)!r} is not a file")
    return paths


def _check_not_overwriting(out_dir, paths: list[Path]) -> None:
    target = check_path(out_dir, "out_dir", "student").resolve()
    for path in paths:
        if path.resolve().parent == target:
            raise ValueError(f"out_dir={str(out_dir)!r} is the folder of {path.name}: the student versions would "
                             f"overwrite the notebooks with their solutions; give another folder, e.g. 'student'")


def _check_cell_ids(nb) -> set[str]:
    return {c.metadata.nbgrader["grade_id"] for c in nb.cells
            if c.get("metadata", {}).get("nbgrader", {}).get("grade_id")}


def _first_error(nb, grade_id: str) -> str:
    """The error a graded check cell printed in an autograded notebook, as one line."""
    for cell in nb.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    return f"{out.get('ename', 'Error')}: {out.get('evalue', '')}".strip().splitlines()[0][:300]
            if any(out.get("name") == "stderr" for out in cell.get("outputs", [])):
                return "the check cell printed a warning or error (stderr), which counts as not passed"
    return ""


def _grade_one(course: Path, student: str, path: Path, source: Path, notebook_timeout: float,
               cell_timeout: float, threads: int | None = None, sandbox: bool = False) -> list[Row]:
    """Grade one student's notebook for one chapter; every failure becomes rows with 0 and a reason."""
    chapter = chapter_of(source.name)
    expected = exercises(source)

    def all_zero(reason):
        return [Row(student, chapter, ex.grade_id, 0.0, ex.points, reason) for ex in expected]

    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as exc:  # not JSON, not a notebook, unreadable
        return all_zero(f"{path.name} is not a readable notebook ({type(exc).__name__}); nothing could be graded")
    present = _check_cell_ids(nb)
    own = _check_cell_ids(nbformat.read(str(source), as_version=4))  # the chapter's answer and check cells
    if present and not present & own:  # e.g. chapter 07's notebook saved as 06_...
        return all_zero(f"{path.name} holds the check cells {', '.join(sorted(present))}, none of {chapter}'s: "
                        f"it looks like another chapter's notebook; nothing could be graded")
    target = course / "submitted" / student / chapter
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, target / source.name)
    try:
        done = _nbgrader(course, "autograde", chapter, f"--student={student}", "--create", "--force",
                         f"--ExecutePreprocessor.timeout={int(cell_timeout)}", f"--Execute.timeout={int(cell_timeout)}",
                         timeout=notebook_timeout, threads=threads, sandbox=sandbox)
    except subprocess.TimeoutExpired:
        return all_zero(f"the notebook ran past the time limit of {notebook_timeout:.0f} s; nothing could be graded")
    graded = course / "autograded" / student / chapter / source.name
    if done.returncode != 0 or not graded.exists():
        tail = [line for line in (done.stderr or "").splitlines() if line.strip()]
        why = "a cell ran past the time limit" if "Timeout" in (done.stderr or "") else "the grader could not run it"
        return all_zero(f"{why}; nothing could be graded ({tail[-1][:200] if tail else 'no message'})")
    from nbgrader.api import Gradebook, MissingEntry

    out_nb = nbformat.read(str(graded), as_version=4)
    timed_out = "Timeout waiting for execute reply" in (done.stderr or "")
    rows = []
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for ex in expected:
            if ex.grade_id not in present:
                rows.append(Row(student, chapter, ex.grade_id, 0.0, ex.points,
                                f"check cell {ex.grade_id} was deleted from the notebook"))
                continue
            try:
                grade = gb.find_grade(ex.grade_id, source.stem, chapter, student)
                score = float(grade.score or 0.0)
            except MissingEntry:
                score = 0.0
            note = "" if score >= ex.points else (_first_error(out_nb, ex.grade_id) or "the check did not pass")
            if note and timed_out:  # nbgrader interrupts a cell past the time limit and goes on with the next
                note = f"a cell ran past the time limit of {cell_timeout:.0f} s and was stopped; then: {note}"
            rows.append(Row(student, chapter, ex.grade_id, score, ex.points, note))
    return rows


def grade(submissions: str | Path, out_dir: str | Path = "grades", source_dir: str | Path = "notebooks",
          notebook_timeout: float = DEFAULT_NOTEBOOK_TIMEOUT, cell_timeout: float = DEFAULT_CELL_TIMEOUT,
          progress: bool = True, jobs: int = 1, sandbox: bool | None = None) -> list[Row]:
    """Grade ``submissions/<student>/NN_name.ipynb`` against the source notebooks in ``source_dir``.

    Writes ``out_dir/gradebook.csv`` (student, chapter, exercise, points, max_points, note) and one
    feedback file per student in ``out_dir/feedback/``, and returns the rows. A file that is not a
    notebook, raises, runs past the time limit or lacks check cells scores 0 for what it could not
    show, with a note saying why; grading carries on with the next file. Hidden folders
    (``.ipynb_checkpoints``) are not students; a student's second file for the same chapter is
    noted and not graded (the one nearest the top of the folder is). Every student folder is in the
    gradebook: one with nothing to grade (empty, or no chapter notebook) gets a row saying so, and a folder
    name that nbgrader cannot take as an id (``zoë``, ``a b``) is graded under a stand-in id and reported
    under its own name. The output folder is never graded, even when it is inside ``submissions``.
    Bad arguments (no student folders, no graded source notebooks, an output folder that cannot be
    written, a time limit outside 1 s to a day) are refused before anything is graded.

    ``jobs`` notebooks are graded at a time, each in a course folder of its own, with the machine's CPU
    cores shared out among their kernels; the rows are the same, in the same order, whatever ``jobs`` is.
    On a GPU every kernel loads its own pipeline, so keep ``jobs`` at 1 unless the memory holds several.

    ``sandbox``: run each submission where every file system is read-only except its own course folder (and
    the Hugging Face cache), so that its code cannot change a file of yours (Linux with ``unshare``; see
    :func:`sandbox_available`). None: when this machine can; True: refuse to grade where it cannot.
    """
    submissions = _check_submissions(submissions)
    if sandbox is None:
        sandbox = sandbox_available()
    elif sandbox and not sandbox_available():
        raise ValueError("sandbox=True, but this machine cannot run the sandbox (it needs Linux with `unshare` and "
                         "unprivileged user namespaces); grade inside a container or a throw-away account instead, "
                         "with sandbox=False (--no-sandbox)")
    if progress:
        print("each submission runs in a read-only sandbox (only its own course folder can be written)" if sandbox
              else "no sandbox: each submission's code runs with your rights (grade code you do not trust inside a "
                   "container or a throw-away account)", flush=True)
    check_seconds(notebook_timeout, "notebook_timeout"), check_seconds(cell_timeout, "cell_timeout")
    jobs = check_int(jobs, "jobs", low=1, high=64, example=2)
    if check_path(out_dir, "out_dir", "grades").resolve() == submissions.resolve():
        raise ValueError(f"out_dir={str(out_dir)!r} is the submissions folder itself; its feedback/ folder would "
                         f"be read as a student next time. Give another folder, e.g. 'grades'.")
    out_dir = check_writable_dir(out_dir, "out_dir", "grades")  # before the long work, not after
    sources = {chapter_of(p.name): p for p in graded_notebooks(source_dir)}
    check_hidden_tests(list(sources.values()))
    notes: dict[str, list[str]] = {}
    tasks: list[tuple[str, str, Path, str]] = []  # (student, id for nbgrader, notebook, chapter), in gradebook order
    folders = [f for f in _student_folders(submissions) if f.resolve() != out_dir.resolve()]  # --out inside it
    for number, folder in enumerate(folders):
        student = folder.name
        # nbgrader takes plain ASCII ids only; any other folder name (zoë, "a b") is graded under a stand-in id
        grader_id = student if STUDENT_ID.match(student) else f"student-{number:04d}-sdcourse"
        files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: (len(p.parts), p))
        if not files:
            notes.setdefault(student, []).append("the folder is empty: no notebook was submitted")
        graded_chapters: dict[str, Path] = {}
        for path in files:
            match = CHAPTER_FILE.match(path.name)
            chapter = f"ch{match.group(1)}" if match else None
            if chapter not in sources:
                notes.setdefault(student, []).append(f"{path.name}: not a graded chapter notebook; ignored")
                continue
            if chapter in graded_chapters:  # one grade per chapter: the file nearest the top of the folder
                notes.setdefault(student, []).append(
                    f"{path.relative_to(folder)}: a second file for {chapter}; ignored "
                    f"(graded: {graded_chapters[chapter].relative_to(folder)})")
                continue
            graded_chapters[chapter] = path
            tasks.append((student, grader_id, path, chapter))
    # Every submission is read into memory before any is run: a student's code that deletes or rewrites the
    # submissions folder cannot change what the students after it are graded on.
    tasks = [(student, grader_id, path, chapter, _read_submission(path)) for student, grader_id, path, chapter in tasks]
    done: list[Row] = []

    def finished(task_rows: list[Row]) -> None:  # the gradebook as it stands, after each notebook
        done.extend(task_rows)
        write_gradebook(sorted(done, key=lambda r: r.student), out_dir, notes)

    graded = _grade_all(tasks, sources, notebook_timeout, cell_timeout, progress, jobs, finished, sandbox)
    rows = [row for task_rows in graded for row in task_rows]
    for student in sorted({f.name for f in folders} - {r.student for r in rows}):  # nothing graded: say why
        why = "; ".join(notes.get(student, [])) or "no graded chapter notebook"
        rows.append(Row(student, "-", "-", 0.0, 0.0, f"nothing graded: {why}"))
    rows.sort(key=lambda r: r.student)  # stable: each student's rows keep their order
    write_gradebook(rows, out_dir, notes)
    return rows


def _grade_all(tasks, sources: dict[str, Path], notebook_timeout: float, cell_timeout: float, progress: bool,
               jobs: int, finished=lambda rows: None, sandbox: bool = False) -> list[list[Row]]:
    """Grade every (student, notebook, chapter) of ``tasks``, ``jobs`` at a time; one list of rows per task.

    Each notebook is graded in a fresh course folder of its own, unpacked from a copy of the released
    course kept in this process's memory, from a copy of the submission read before grading began: whatever a
    student's code deletes or overwrites around it (the gradebook database, the sources, the submissions
    folder), the next student's notebook and course folder are whole. ``finished`` gets each task's rows
    as soon as they are known.
    """
    if not tasks:
        return []
    jobs = max(1, min(jobs, len(tasks)))
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="sdcourse-grade-") as tmp:
        release = Path(tmp) / "release"  # every chapter is released once, packed, then removed from the disk
        release.mkdir()
        _release(release, [sources[chapter] for chapter in dict.fromkeys(task[3] for task in tasks)])
        packed = _pack(release)
        shutil.rmtree(release)

        def grade_task(task) -> list[Row]:
            student, grader_id, path, chapter, data = task
            if progress:
                with lock:
                    print(f"grading {student} / {path.name}", flush=True)
            course = Path(tempfile.mkdtemp(prefix="course-", dir=tmp))
            try:
                _unpack(packed, course)
                kept = course / "incoming" / path.name  # the copy read before grading began, not the file now
                kept.parent.mkdir()
                if data is not None:
                    kept.write_bytes(data)
                rows = _grade_one(course, grader_id, kept, sources[chapter], notebook_timeout, cell_timeout, threads,
                                  sandbox)
            finally:
                shutil.rmtree(course, ignore_errors=True)
            for row in rows:
                row.student = student
            with lock:
                finished(rows)
            return rows

        if jobs == 1:
            return [grade_task(task) for task in tasks]
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(grade_task, tasks))


def _read_submission(path: Path) -> bytes | None:
    """A submitted file's bytes (None when it cannot be read: it is then graded as unreadable)."""
    try:
        return path.read_bytes()
    except OSError:
        return None


def _pack(folder: Path) -> bytes:
    """A folder as the bytes of a tar archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=".")
    return buffer.getvalue()


def _unpack(packed: bytes, folder: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
        tar.extractall(folder, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))


def _check_submissions(submissions) -> Path:
    submissions = check_path(submissions, "submissions", "submissions")
    if not submissions.is_dir():
        raise ValueError(f"submissions={str(submissions)!r} is not a folder "
                         "(expected submissions/<student>/NN_name.ipynb)")
    if not _student_folders(submissions):
        loose = sorted(p.name for p in submissions.glob("*.ipynb"))
        hint = (f"; it holds notebooks ({', '.join(loose[:3])}) directly: put each student's in a folder of its own"
                if loose else "")
        raise ValueError(f"submissions={str(submissions)!r} has no student folders (expected "
                         f"submissions/<student>/NN_name.ipynb){hint}")
    seen: dict[str, str] = {}
    for folder in _student_folders(submissions):
        other = seen.setdefault(folder.name.lower(), folder.name)
        if other != folder.name:  # their feedback files would be one file on Windows and macOS
            raise ValueError(f"submissions={str(submissions)!r} has student folders {other!r} and {folder.name!r}, "
                             f"which differ only in case; rename or merge one")
    return submissions


def _student_folders(submissions: Path) -> list[Path]:
    """The sub-folders of ``submissions``, leaving out hidden ones (``.ipynb_checkpoints``, ``.git``)."""
    return sorted(p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))


def write_gradebook(rows: list[Row], out_dir: Path, notes: dict[str, list[str]] | None = None) -> None:
    """The CSV gradebook and one markdown feedback file per student."""
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / ".gradebook.csv.partial"  # written whole, then renamed: never half a gradebook
    with open(partial, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "chapter", "exercise", "points", "max_points", "note"])
        for r in rows:
            writer.writerow([r.student, r.chapter, r.exercise, f"{r.points:g}", f"{r.max_points:g}", r.note])
    os.replace(partial, out_dir / "gradebook.csv")
    (out_dir / "feedback").mkdir(exist_ok=True)
    notes = notes or {}
    for student in sorted({r.student for r in rows} | set(notes)):
        mine = [r for r in rows if r.student == student]
        lines = [f"# Feedback for {student}", ""]
        for r in mine:
            mark = "passed" if r.points >= r.max_points else "not passed"
            lines.append(f"- {r.chapter} {r.exercise}: {r.points:g} / {r.max_points:g} ({mark})"
                         + (f": {r.note}" if r.note else ""))
        lines += [f"- {n}" for n in notes.get(student, [])]
        total = sum(r.points for r in mine), sum(r.max_points for r in mine)
        lines += ["", f"Total: {total[0]:g} / {total[1]:g}", ""]
        (out_dir / "feedback" / f"{student}.md").write_text("\n".join(lines))


def summary_table(rows: list[Row]) -> str:
    """Points per student and chapter as a plain-text table (what ``grade`` prints at the end)."""
    students = sorted({r.student for r in rows})
    chapters = sorted({r.chapter for r in rows} - {"-"})  # "-": a student with nothing graded
    table = [["student", *chapters, "total"]]
    for s in students:
        line = [s]
        for c in chapters:
            mine = [r for r in rows if r.student == s and r.chapter == c]
            line.append(f"{sum(r.points for r in mine):g}/{sum(r.max_points for r in mine):g}" if mine else "-")
        mine = [r for r in rows if r.student == s]
        line.append(f"{sum(r.points for r in mine):g}/{sum(r.max_points for r in mine):g}")
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdcourse.grading", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("student", help="write the student versions of the graded chapter notebooks")
    s.add_argument("--source", default="notebooks", help="folder of the course's notebooks (default: notebooks)")
    s.add_argument("--out", default="student", help="where the student versions go (default: student)")
    c = sub.add_parser("learner", help="write what a learner opens: chapters/ (no solutions, outputs kept) and "
                                       "solutions/ (worked solutions, a page per chapter)")
    c.add_argument("--source", default="notebooks", help="folder of the course's notebooks (default: notebooks)")
    c.add_argument("--out", default="chapters", help="where the learners' copies go (default: chapters)")
    c.add_argument("--solutions", default="solutions", help="where the solution pages go (default: solutions)")
    c.add_argument("--no-solutions", action="store_true",
                   help="a teacher's class copies: no solutions pages, and no link to them in the copies")
    g = sub.add_parser("grade", help="grade a folder of submissions: SUBMISSIONS/<student>/NN_name.ipynb")
    g.add_argument("submissions")
    g.add_argument("--source", default="notebooks", help="folder of the course's notebooks (default: notebooks)")
    g.add_argument("--out", default="grades", help="where the gradebook and feedback go (default: grades)")
    g.add_argument("--timeout", type=float, default=DEFAULT_NOTEBOOK_TIMEOUT, help="seconds per notebook")
    g.add_argument("--cell-timeout", type=float, default=DEFAULT_CELL_TIMEOUT, help="seconds per cell")
    g.add_argument("--no-sandbox", action="store_true",
                   help="run submissions without the read-only sandbox (which needs Linux with unshare)")
    g.add_argument("--jobs", type=int, default=1,
                   help="notebooks graded at a time (default 1; on a CPU, up to its number of cores)")
    args = parser.parse_args(argv)
    try:
        if args.command == "learner":
            for path in make_learner_copies(args.source, args.out, None if args.no_solutions else args.solutions):
                print("wrote", path)
            return 0
        if args.command == "student":
            for path in make_student_versions(args.source, args.out):
                print("wrote", path)
            return 0
        check_seconds(args.timeout, "--timeout"), check_seconds(args.cell_timeout, "--cell-timeout")
        rows = grade(args.submissions, args.out, args.source, args.timeout, args.cell_timeout, jobs=args.jobs,
                     sandbox=False if args.no_sandbox else None)
    except (TypeError, ValueError) as err:  # bad arguments: one line, no traceback
        sub.choices[args.command].error(str(err))
    print(summary_table(rows))
    print(f"gradebook: {Path(args.out) / 'gradebook.csv'}; feedback: {Path(args.out) / 'feedback'}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
