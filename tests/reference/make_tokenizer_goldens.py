#!/usr/bin/env python3
"""Generates the tokenizer goldens in tests/data/tokenizer/ (not run in CI).

References:
  * llama.cpp (llama-cpp-python, vocab_only) tokenizes every GGUF: the default
    model and three tiny vocab-only GGUFs written here. Polar's FromGguf must
    match these ids exactly.
  * Hugging Face `tokenizers` tokenizes every tokenizer.json written here (the
    default model's vocabulary, minified, and the tiny ones). Polar's
    FromTokenizerJson must match these ids exactly.
  * transformers renders the chat-template goldens (the default model's own
    template, loaded from its GGUF, and Llama-3 / Llama-2 / plain ChatML
    templates on the tiny tokenizers).

Files written:
  smollm2_tokenizer.json    the default model's tokenizer as transformers
                            converts it from the GGUF, with the original
                            SmolLM2 pre-tokenizer (Digits + ByteLevel), minified
  tiny_{llama3,qwen2,gpt2}.{json,gguf}
                            small BPEs trained here, one per pre-tokenizer
                            family (tiny_qwen2.json also has an NFC normalizer,
                            tiny_gpt2.json ByteLevel add_prefix_space)
  tiny_llama3_tokenizer_config.json
  goldens.json              texts (hex), ids per tokenizer / source / flags,
                            token pieces, end-of-generation ids, chat renders

Usage: python3 tests/reference/make_tokenizer_goldens.py [--model GGUF] [--out DIR]
"""
import argparse
import json
import os
import random
import sys

import gguf
import llama_cpp
import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_MODEL = os.path.join(ROOT, ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf")

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
    " + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

CONVERSATIONS = [
    ([("user", "Hello!")], True),
    ([("user", "Hello!")], False),
    ([("system", "You are terse."), ("user", "Hi"), ("assistant", "Hello."), ("user", "What's 2+2?")], True),
    ([("user", "Héllo 世界 😀\nline two\n"), ("assistant", "  padded answer \n\t")], False),
    ([("assistant", "I speak first.")], True),
    ([("user", "a"), ("user", "b")], True),
    ([("system", "  sys with spaces  "), ("user", "\u3000ideographic space\u00a0"), ("assistant", "ok")], True),
    ([("user", "<|im_start|>literal markers<|im_end|>"), ("tool", "{\"x\": 1}")], True),
]


def fixed_texts():
    """(name, bytes) pairs covering what tokenizers get wrong most often."""
    t = [
        ("empty", ""),
        ("hello", "Hello world"),
        ("prose", "The quick brown fox jumps over the lazy dog. It's 5 o'clock somewhere; we'll see, "
                  "won't we? \"Quotes\" and (parentheses) [brackets] {braces} -- dashes... ellipsis!"),
        ("contractions", "I'm you're he's she'd we've they'll it's IT'S WE'RE THEY'LL I'M YOU'D 'S 'T 'Re 'vE"),
        ("apostrophes", "'" * 4 + " ' s don't won't rock'n'roll \u2019s curly\u2019t 'x 'sa 'llama"),
        ("python", "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\n"
                   "class Foo(object):\n\tdef __init__(self):\n\t\tself.x = {'a': [1, 2, 3]}  # comment\n"),
        ("cpp", "#include <vector>\nint main() {\n  std::vector<int> v{1, 2, 3};\n  for (auto& x : v) x *= 2;"
                "\n  return v[0] == 2 ? 0 : 1;\n}\n"),
        ("numbers", "1234567 3.14159 2024-01-15 12:30:45 1,000,000 $19.99 0x1F 0b1010 1e-9 -42 +7 100%"),
        ("digit_runs", "1 12 123 1234 12345 123456 1234567890123"),
        ("other_numbers", "\u0661\u0662\u0663 \u0967\u0968 \u00bd \u00b2 \u2167 x\u00b2+y\u00b2 \u2460\u2461 \uff11\uff12"),
        ("cjk", "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u4eca\u5929\u5929\u6c14\u5f88\u597d\u3002"),
        ("japanese", "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c \u30ab\u30bf\u30ab\u30ca \uff76\uff80\uff76\uff85"),
        ("korean", "\uc548\ub155\ud558\uc138\uc694 \uc138\uacc4"),
        ("arabic", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645\u060c \u0643\u064a\u0641 "
                   "\u062d\u0627\u0644\u0643\u061f"),
        ("hindi", "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e"),
        ("cyrillic", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0415\u0451\u0436"),
        ("greek", "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5"),
        ("thai", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01"),
        ("hebrew", "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd"),
        ("emoji", "\U0001F600\U0001F44D\U0001F3FD \U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466 "
                  "\U0001F1FA\U0001F1F8\U0001F1EF\U0001F1F5 \u2764\ufe0f \U0001F3F3\ufe0f\u200d\U0001F308"),
        ("newlines3", "\n\n\n"),
        ("leading_spaces", "   leading"),
        ("trailing_spaces", "trailing   "),
        ("space_runs", "a  b   c    d     e"),
        ("tabs", "\t\tindent\ttabs\t \t"),
        ("crlf", "line1\r\nline2\r\n\r\nline3\r"),
        ("mixed_ws", " \n \n  x\n\n  y \t\n"),
        ("unicode_spaces", "\u00a0nbsp\u2009thin\u3000ideographic\u2028sep\u0085nel\u1680ogham x\u00a0 y"),
        ("single_space", " "),
        ("single_newline", "\n"),
        ("chat_markup", "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"),
        ("specials_glued", "text<|im_end|>text<|endoftext|><|im_start|><|im_start|>"),
        ("specials_partial", "<|im_start <|im_end |> < |im_end| > <|im_start|"),
        ("specials_spaced", " <|im_start|> system \n<|im_end|> \n"),
        ("llama3_markup", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"),
        ("user_tag", "a<user_tag>b <user_tag> <user_tag"),
        ("accents", "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m"),
        ("decomposed", "cafe\u0301 nai\u0308ve A\u030angstro\u0308m"),
        ("zalgo", "t\u0336\u0321e\u0337x\u0338t \u0301\u0301 lone marks"),
        ("mixed_scripts", "hello123world abc\u0661\u0662\u0663def \u4f60\u597dworld \u041f\u0440\u0438vet"),
        ("symbols", "\u00a9 \u00ae \u2122 \u20ac \u00a3 \u00a5 \u2192 \u221e \u2211 \u222b \u2248 \u2260 @#$%^&*_=+|~`"),
        ("long_a", "a" * 1000),
        ("long_spaces", " " * 100 + "x"),
        ("long_ab", "ab" * 300),
        ("long_digits", "1" * 50),
        ("long_emoji", "\U0001F600" * 20),
        ("control_chars", "a\x00b\x01c\x1bd\x7fe\x1cf\x1fg"),
        ("private_unassigned", "\ue000\uf8ff\U000f0000 \u0378\u0380 \ufffd \ufeff"),
    ]
    out = [(name, s.encode("utf-8")) for name, s in t]
    out += [
        ("invalid_ff_fe", b"\xff\xfeabc"),
        ("invalid_continuation", b"abc\x80def\xbf"),
        ("invalid_truncated_2", b"x\xc3"),
        ("invalid_truncated_3", b"x\xe2\x82 y"),
        ("invalid_truncated_4", b"\xf0\x9f\x98 z"),
        ("invalid_overlong", b"\xc0\x80\xc1\xbf\xe0\x80\xaf"),
        ("invalid_surrogate", b"\xed\xa0\x80\xed\xbf\xbf"),
        ("invalid_above_max", b"a\xf4\x90\x80\x80b"),
        ("invalid_f8", b"\xf8\x88\x80\x80\x80"),
        ("invalid_mixed", b"ok \xe4\xbd\xa0\xe5\xa5 \xff<|im_end|>\xc3(\n"),
    ]
    return out


def random_texts(seed, count, allow_nul=True):
    """Seeded random strings over code points that stress the pre-tokenizer:
    letters of several scripts, digits of several kinds, punctuation,
    symbols, every whitespace kind, combining marks, emoji and joiners,
    apostrophes that may or may not start a contraction."""
    pool = (list("abcXYZsStTdDmMrReEvVlL'") + list("0123456789") + list(" \t\n\r\x0b\x0c") +
            list(".,;:!?-_()[]{}<>/\\\"#$%&*+=@^`|~") +
            ["\u00a0", "\u2009", "\u3000", "\u2028", "\u0085", "\u1680", "\u200b", "\u00e9", "\u0301", "\u0308",
             "\u4f60", "\u597d", "\u3053", "\u30ab", "\uac00", "\u0645", "\u0928", "\u094d", "\u041f", "\u03b1",
             "\u0e2a", "\u0661", "\u0967", "\u00bd", "\u00b2", "\u2167", "\uff11", "\u20ac", "\u2192", "\u00a9",
             "\U0001F600", "\U0001F44D", "\U0001F3FD", "\u200d", "\ufe0f", "\U0001F1FA", "\U0001F1F8", "\u2019",
             "\ue000", "\u0378", "\x1f", "\u02b0", "\u1d2c", "\u2160"] + (["\x00"] if allow_nul else []))
    rng = random.Random(seed)
    out = []
    for i in range(count):
        n = rng.randint(1, 40)
        out.append((f"random_{i}", "".join(rng.choice(pool) for _ in range(n)).encode("utf-8")))
    return out


def train_tiny(kind, corpus):
    """A ~700-token byte-level BPE with the given pre-tokenizer family."""
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    if kind == "llama3":
        tok = Tokenizer(models.BPE(ignore_merges=True))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif kind == "qwen2":
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    if kind == "llama3":
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                           special_tokens=[("<|begin_of_text|>", bos)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    # A non-special added token (always matched, llama.cpp "user defined").
    tok.add_tokens([AddedToken("<user_tag>", special=False, normalized=False)])
    return tok


def write_vocab_gguf(path, tok_json, pre, bos, eos, add_bos, chat_template):
    """A vocab-only GGUF (llama architecture, no tensors) llama.cpp can load."""
    vocab = tok_json["model"]["vocab"]
    n = max(max(vocab.values()), max(a["id"] for a in tok_json["added_tokens"])) + 1
    tokens, types = [""] * n, [1] * n
    for text, i in vocab.items():
        tokens[i] = text
    for a in tok_json["added_tokens"]:
        tokens[a["id"]] = a["content"]
        types[a["id"]] = 3 if a["special"] else 4
    merges = [" ".join(m) if isinstance(m, list) else m for m in tok_json["model"]["merges"]]
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(128)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(1)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(8)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(add_bos)
    w.add_chat_template(chat_template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_ids(model, data, add_special, parse_special):
    return model.tokenize(data, add_bos=add_special, special=parse_special)


def hf_ids(tok, text, add_special, parse_special):
    tok.encode_special_tokens = not parse_special
    ids = tok.encode(text, add_special_tokens=add_special).ids
    tok.encode_special_tokens = False
    return ids


def llama_eog(model, n):
    vocab = llama_cpp.llama_model_get_vocab(model.model)
    return [i for i in range(n) if llama_cpp.llama_vocab_is_eog(vocab, i)], vocab


def llama_piece(vocab, token):
    buf = (llama_cpp.ctypes.c_char * 256)()
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, 256, 0, True)
    assert 0 <= n <= 256
    return bytes(buf[:n])


def safe_for_llama(data):
    # llama.cpp aborts on code points above U+10FFFF (F4 90.. .. F7 ..):
    # those texts have no llama.cpp golden.
    for i, b in enumerate(data):
        if b >= 0xF5 and b <= 0xF7:
            return False
        if b == 0xF4 and i + 1 < len(data) and data[i + 1] >= 0x90:
            return False
    return True


def golden_cases(texts, n_fixed, llama_model, hf_tok):
    cases = []
    for i, (name, data) in enumerate(texts):
        modes = [(False, True), (False, False), (True, True), (True, False)] if i < n_fixed else [(False, True)]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        for add_special, parse_special in modes:
            case = {"text": i, "add_special": add_special, "parse_special": parse_special}
            if llama_model is not None and safe_for_llama(data):
                case["llama_cpp"] = llama_ids(llama_model, data, add_special, parse_special)
            if hf_tok is not None and text is not None:
                case["hf"] = hf_ids(hf_tok, text, add_special, parse_special)
            cases.append(case)
    return cases


def render(tok, conversation, add_generation_prompt):
    messages = [{"role": r, "content": c} for r, c in conversation]
    try:
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception:  # the template raised (e.g. roles must alternate)
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/data/tokenizer"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    texts = fixed_texts()
    n_fixed = len(texts)
    texts += random_texts(seed=1234, count=150)
    goldens = {"texts": [{"name": name, "hex": data.hex()} for name, data in texts], "tokenizers": {}, "chat": []}
    report = []

    # --- The default model: GGUF through llama.cpp, tokenizer.json through HF.
    model_dir, model_file = os.path.split(args.model)
    hf_from_gguf = AutoTokenizer.from_pretrained(model_dir, gguf_file=model_file)
    converted = json.loads(hf_from_gguf.backend_tokenizer.to_str())
    # transformers writes a plain ByteLevel pre-tokenizer; SmolLM2's own
    # tokenizer.json isolates digits first (llama.cpp's "smollm"). Keep the
    # original, and check below that both give the same ids on every text.
    converted["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    smol_json_path = os.path.join(args.out, "smollm2_tokenizer.json")
    with open(smol_json_path, "w", encoding="utf-8") as f:
        json.dump(converted, f, ensure_ascii=False, separators=(",", ":"))
    smol_hf = Tokenizer.from_file(smol_json_path)
    smol_llama = llama_cpp.Llama(args.model, vocab_only=True, verbose=False)
    n_vocab = len(converted["model"]["vocab"])
    eog, vocab = llama_eog(smol_llama, n_vocab)
    piece_ids = list(range(0, 300)) + list(range(300, n_vocab, 97)) + [n_vocab - 1]
    cases = golden_cases(texts, n_fixed, smol_llama, smol_hf)
    goldens["tokenizers"]["smollm2"] = {
        "gguf": "POLAR_DEFAULT_MODEL", "json": "smollm2_tokenizer.json", "vocab_size": n_vocab,
        "bos": llama_cpp.llama_vocab_bos(vocab), "eos": llama_cpp.llama_vocab_eos(vocab), "eog": eog,
        "pieces": {str(i): llama_piece(vocab, i).hex() for i in piece_ids},
        "cases": cases,
    }
    plain = hf_from_gguf.backend_tokenizer
    for i, (name, data) in enumerate(texts):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if hf_ids(plain, text, False, True) != hf_ids(smol_hf, text, False, True):
            report.append(f"smollm2: transformers' GGUF conversion and the Digits pre-tokenizer differ on {name}")

    # --- Tiny tokenizers: one per pre-tokenizer family, both file kinds.
    corpus = [t.decode("utf-8", "replace") for _, t in texts] * 3
    tiny = {"llama3": ("llama-bpe", LLAMA3_TEMPLATE, True), "qwen2": ("qwen2", CHATML_TEMPLATE, False),
            "gpt2": ("gpt-2", "", False)}
    hf_chat = {}
    for kind, (pre, template, add_bos) in tiny.items():
        tok = train_tiny(kind, corpus)
        name = f"tiny_{kind}"
        json_path = os.path.join(args.out, name + ".json")
        tok.save(json_path, pretty=False)
        tok_json = json.loads(tok.to_str())
        bos = tok.token_to_id("<|begin_of_text|>")
        eos = tok.token_to_id("<|eot_id|>" if kind == "llama3" else "<|im_end|>")
        gguf_path = os.path.join(args.out, name + ".gguf")
        write_vocab_gguf(gguf_path, tok_json, pre, bos, eos, add_bos, template)
        model = llama_cpp.Llama(gguf_path, vocab_only=True, verbose=False)
        eog, _ = llama_eog(model, tok.get_vocab_size())
        goldens["tokenizers"][name] = {
            "gguf": name + ".gguf", "json": name + ".json", "vocab_size": tok.get_vocab_size(),
            "bos": bos, "eos": eos, "eog": eog, "cases": golden_cases(texts, n_fixed, model, Tokenizer.from_file(json_path)),
        }
        if kind == "llama3":
            config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": template}
            with open(os.path.join(args.out, "tiny_llama3_tokenizer_config.json"), "w") as f:
                json.dump(config, f, indent=1)
        if template:
            hf_chat[name] = PreTrainedTokenizerFast(tokenizer_file=json_path, bos_token="<|begin_of_text|>",
                                                    eos_token=tok.id_to_token(eos), chat_template=template)

    # --- Chat templates.
    llama2 = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.out, "tiny_gpt2.json"), bos_token="<s>",
                                     eos_token="</s>", chat_template=LLAMA2_TEMPLATE)
    renderers = [("smollm2", hf_from_gguf, None), ("tiny_llama3", hf_chat["tiny_llama3"], None),
                 ("tiny_qwen2", hf_chat["tiny_qwen2"], None),
                 ("llama2", llama2, {"template": LLAMA2_TEMPLATE, "bos": "<s>", "eos": "</s>"})]
    for name, tok, extra in renderers:
        for conversation, gen in CONVERSATIONS:
            entry = {"tokenizer": name, "messages": [{"role": r, "content": c} for r, c in conversation],
                     "add_generation_prompt": gen, "rendered": render(tok, conversation, gen)}
            if extra:
                entry.update(extra)
            goldens["chat"].append(entry)

    # --- UTF-8 repair for the streaming detokenizer: Python's "replace"
    # error handler substitutes U+FFFD per maximal invalid subpart.
    rng = random.Random(99)
    samples = [data for _, data in texts if data]
    for _ in range(200):
        n = rng.randint(1, 12)
        samples.append(bytes(rng.choice([rng.randrange(256), rng.randrange(0x80, 0xC0), rng.randrange(0xC0, 0x100)])
                             for _ in range(n)))
    goldens["utf8_replace"] = [{"in": b.hex(), "out": b.decode("utf-8", "replace").encode("utf-8").hex()}
                               for b in samples]

    # --- llama.cpp vs HF on the same vocabulary (informational: the two
    # reference tokenizers disagree where a tokenizer.json asks for what
    # llama.cpp ignores, e.g. NFC or ByteLevel add_prefix_space).
    for name, entry in goldens["tokenizers"].items():
        diffs = sorted({texts[c["text"]][0] for c in entry["cases"]
                        if "llama_cpp" in c and "hf" in c and c["llama_cpp"] != c["hf"]})
        if diffs:
            report.append(f"{name}: llama.cpp != HF on {len(diffs)} texts: {', '.join(diffs[:8])}"
                          + (" ..." if len(diffs) > 8 else ""))

    with open(os.path.join(args.out, "goldens.json"), "w", encoding="utf-8") as f:
        json.dump(goldens, f, ensure_ascii=False, separators=(",", ":"))
    print(f"{len(texts)} texts; tokenizers {', '.join(goldens['tokenizers'])}; {len(goldens['chat'])} chat renders")
    print("\n".join(report) if report else "llama.cpp and HF agree everywhere both apply")


if __name__ == "__main__":
    main()
