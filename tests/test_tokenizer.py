"""The mini model's tokenizer is CLIP's: the same ids as open_clip's own tokenizer, 49,408 tokens, 77 positions.

open_clip's package ``__init__`` imports torchvision, which this course does not install, so its
``tokenizer.py`` is loaded on its own from the installed wheel.
"""
import filecmp
import html
import importlib.util
from pathlib import Path

import pytest

from sdcourse.mini import clip_vocab
from sdcourse.loader import MINI_MODEL_DIR

TOKENIZER_DIR = MINI_MODEL_DIR / "tokenizer"
BOS, EOS = 49406, 49407

LONG_WORD = "x" * 333  # one 333-letter word: 83 tokens
LONG_SENTENCE = " ".join(["a red square on a blue background"] * 20)  # 140 tokens
PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "a small green circle in the top left on a black background",
    "A LARGE Orange Triangle in the Center on a White Background",
    "Café au lait, crème brûlée à la française",
    "naïve façade, Ångström, Øresund, Zürich Straße",
    "ümlaut ÜMLAUT ŒUVRE",
    "Hello!!! What's up?? (really) [yes] {no} <maybe>",
    "it's we're they've I'm you'll he'd",
    "numbers 1234567890 and 3.14159, 50% off, $100",
    "email@example.com #hashtag @someone ~tilde^caret",
    "a cat 🐱 on a 🚀 rocket to the 🌕",
    "emoji family 👨‍👩‍👧 and flags 🇫🇷🇯🇵",
    "東京の夜景",
    "一只在月球上的猫",
    "서울의 밤",
    "Привет, мир",
    "  lots   of\twhitespace\n here  ",
    "trippy psychedelic fractal, 8k, trending on artstation, by greg rutkowski",
    "",
    "x",
    LONG_WORD,
    LONG_SENTENCE,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
]


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        pytest.fail("open-clip-torch is not installed; install it with pip install --no-deps open-clip-torch")
    path = Path(list(spec.submodule_search_locations)[0]) / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference(open_clip_tokenizer):
    return open_clip_tokenizer.SimpleTokenizer()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR)


def reference_ids(reference, prompt, length=77):
    """open_clip's ids without its zero padding, truncated the way it does: keep 77, last one EOS."""
    ids = [reference.sot_token_id] + reference.encode(prompt) + [reference.eot_token_id]
    if len(ids) > length:
        ids = ids[:length]
        ids[-1] = reference.eot_token_id
    return ids


def test_enough_prompts():
    assert len(set(PROMPTS)) >= 20


@pytest.mark.parametrize("prompt", PROMPTS)
def test_same_ids_as_open_clip(tokenizer, reference, prompt):
    ours = tokenizer(prompt, truncation=True, max_length=77).input_ids
    assert ours == reference_ids(reference, prompt)


def test_over_long_prompts_are_cut_to_77(tokenizer, reference):
    for prompt in (LONG_WORD, LONG_SENTENCE):
        ours = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
        assert len(ours) == 77 and ours[0] == BOS and ours[-1] == EOS
        assert len(reference.encode(prompt)) > 75  # really over-long before cutting


def test_known_example(tokenizer):
    ids = tokenizer("a photograph of an astronaut riding a horse").input_ids
    assert ids == [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]


def test_vocabulary_size(tokenizer, reference):
    assert len(tokenizer) == 49408 == reference.vocab_size
    assert tokenizer.model_max_length == 77
    assert tokenizer.convert_ids_to_tokens([BOS, EOS]) == ["<|startoftext|>", "<|endoftext|>"]


def test_padding_to_77_with_end_of_text(tokenizer):
    ids = tokenizer("a red circle", padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert len(ids) == 77
    assert ids[:5] == [BOS, 320, 736, 7117, EOS]
    assert ids[5:] == [EOS] * 72
    assert tokenizer.pad_token_id == EOS  # Stable Diffusion pads with EOS; open_clip pads with 0


@pytest.mark.parametrize("prompt", [
    "salt &amp; pepper",                      # HTML entity: open_clip un-escapes it to "&"
    "smart “quotes” and ‘single’ ones",       # ftfy straightens curly quotes
    "the ﬁnal ligature",                      # ftfy splits the "ﬁ" ligature into "fi"
])
def test_known_difference_text_repair(tokenizer, reference, open_clip_tokenizer, prompt):
    """open_clip repairs text first (ftfy.fix_text, then html.unescape twice); transformers does not.

    So these prompts get different ids, and the same ids once the prompt is repaired the same way.
    The course's prompts are plain text, where the two agree.
    """
    repaired = open_clip_tokenizer.basic_clean(prompt)
    assert tokenizer(prompt).input_ids != reference_ids(reference, prompt)
    assert tokenizer(repaired).input_ids == reference_ids(reference, prompt)


def test_html_entity_example(tokenizer, reference):
    assert reference.encode("a &amp; b") == reference.encode("a & b")
    assert tokenizer("a &amp; b").input_ids != tokenizer("a & b").input_ids
    assert tokenizer(html.unescape("a &amp; b")).input_ids == reference_ids(reference, "a &amp; b")


def test_vocab_files_regenerate_byte_identical(tmp_path):
    """python -m sdcourse.mini.clip_vocab rebuilds exactly the committed vocab.json and merges.txt."""
    clip_vocab.write_tokenizer(tmp_path)
    for name in ("vocab.json", "merges.txt"):
        assert filecmp.cmp(tmp_path / name, TOKENIZER_DIR / name, shallow=False), name


def test_check_tokenizer_accepts_the_real_one(tokenizer):
    import sdcourse

    sdcourse.check_tokenizer(tokenizer)


def test_check_tokenizer_refuses_a_tiny_tokenizer(tmp_path):
    import json

    from transformers import CLIPTokenizer

    import sdcourse

    (tmp_path / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tiny = CLIPTokenizer(vocab_file=str(tmp_path / "vocab.json"), merges_file=str(tmp_path / "merges.txt"))
    with pytest.raises(ValueError, match=rf"only {len(tiny)} tokens; a real CLIP tokenizer has 49,408"):
        sdcourse.check_tokenizer(tiny)


def test_check_tokenizer_refuses_something_else():
    import sdcourse

    with pytest.raises(TypeError, match="expected a tokenizer.*got int"):
        sdcourse.check_tokenizer(42)


def test_offline_hub_tokenizer_trap(monkeypatch):
    """transformers 5 offline: a hub id may load as a 2-token tokenizer without error; the guard catches it."""
    from transformers import CLIPTokenizer

    import sdcourse

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        loaded = CLIPTokenizer.from_pretrained("sdcourse-tests/clip-tokenizer-not-cached")
    except OSError:
        return  # a transformers that raises is fine too: nothing silent gets through
    with pytest.raises(ValueError, match="tokenizer has only"):
        sdcourse.check_tokenizer(loaded)
