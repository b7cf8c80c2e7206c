#!/usr/bin/env python3
"""Deterministic test corpus for tokenizer parity (tests/python/test_tokenizer_parity.py).

Covers what breaks tokenizers: ASCII prose, accents (precomposed and decomposed), CJK, Arabic
and other scripts, emoji with ZWJ sequences and skin tones, combining marks, runs of
spaces/tabs/newlines, code, long numbers, text containing special-token strings, byte-fallback
characters and the empty string. Same output on every run (seeded random.Random).

    python3 tools/tokenizer_corpus.py [--count N] > corpus.jsonl   # one JSON string per line
    python3 tools/tokenizer_corpus.py --bench-text > bench.jsonl      # ~1 MB of documents
"""
import argparse
import json
import random
import unicodedata

WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or "
    "one had by word but not what all were we when your can said there use an each which she do "
    "how their if will up other about out many then them these so some her would make like him "
    "into time has look two more write go see number no way could people my than first water "
    "been call who oil its now find long down day did get come made may part tokenizer server "
    "adapter inference model batch kernel latency throughput gradient Hello World OpenAI LLaMA"
).split()
CONTRACTIONS = ["I'm", "don't", "DON'T", "you'll", "We'VE", "she'd", "it's", "They're", "'s",
                "rock'n'roll", "o'clock", "y'all"]
ACCENTED = ["café", "naïve", "résumé", "Ångström", "façade", "jalapeño", "Zürich", "São Paulo",
            "Tiếng Việt", "Dvořák", "Łódź", "smörgåsbord", "crème brûlée", "über", "İstanbul",
            "ñandú", "Ærøskøbing", "straße", "ĳssel"]
CJK = ["你好，世界！", "中文分词测试", "東京都渋谷区", "ひらがなとカタカナ", "こんにちは世界",
       "한국어 텍스트", "안녕하세요", "漢字かな交じり文", "机器学习模型推理", "ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ",
       "「引用」と『二重引用』", "一二三四五六七八九十"]
OTHER_SCRIPTS = ["مرحبا بالعالم", "اللغة العربية جميلة", "שלום עולם", "Привет, мир!",
                 "Ελληνικά γράμματα", "नमस्ते दुनिया", "สวัสดีชาวโลก", "ქართული ენა",
                 "Հայերեն", "ਪੰਜਾਬੀ", "தமிழ் மொழி", "ᚠᚢᚦᚨᚱᚲ", "ܐܪܡܝܐ", "ʻŌlelo Hawaiʻi"]
EMOJI = ["😀", "👍", "👍🏽", "👍🏿", "👨‍👩‍👧‍👦", "👩🏽‍💻", "🏳️‍🌈", "🇺🇸", "🇯🇵", "1️⃣",
         "❤️", "🧑🏻‍🤝‍🧑🏿", "🤷‍♀️", "🐈‍⬛", "✨", "🔥🔥🔥", "🫠", "👁️‍🗨️"]
COMBINING = ["e\u0301", "a\u0308", "n\u0303", "o\u0302\u0323", "Z\u0351\u036b\u0343\u036a",
             "a\u0301\u0302\u0303\u0304", "\u0301leading", "x\u20dd", "q\u0307\u0323",
             "\u1100\u1161\u11a8", "\u0915\u094d\u0937"]
WHITESPACE = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000",
              "\u2028", "\u0085", "\u200b", " \t \n", "\u2003", "\f", "\v"]
SPECIAL_TOKENS = ["<s>", "</s>", "<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>",
                  "<|start_header_id|>", "<|end_header_id|>", "<|im_start|>", "<|im_end|>",
                  "<|endoftext|>", "<think>", "</think>", "<tool_call>", "<|reserved_special_token_3|>",
                  "<|im_start", "<s", "<|", "|>"]
CODE = [
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    '{"key": "value", "list": [1, 2, 3], "nested": {"a": null}}',
    "#include <vector>\nstd::vector<int> v{1,2,3};",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "fn main() { println!(\"{}\", 42); }",
    "$ ls -la | grep '.cc' && echo \"done\"",
    "<div class=\"x\"><p>Hi&nbsp;there</p></div>",
    "x = [i for i in range(10) if i % 2 == 0]",
    "    \n    indented\n        more\n",
]
RARE = ["𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𓀀𓀁", "𐍈", "\U0001F9FF", "\ue000", "\U000E0041", "ꙮ", "𝟘𝟙", "ǅ", "ﬁ"]


def random_number(rng):
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 40)))
    form = rng.randrange(4)
    if form == 0:
        return digits
    if form == 1:
        return f"{digits}.{rng.randint(0, 99999)}"
    if form == 2:
        return f"{int(digits):,}"
    return f"-{digits}e{rng.randint(-30, 30)}"


def random_code_points(rng):
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF),
              (0x590, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F),
              (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFF00, 0xFFEF),
              (0x1F300, 0x1FAFF)]
    out = []
    for _ in range(rng.randint(1, 30)):
        lo, hi = rng.choice(ranges)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def prose(rng, n):
    words = [rng.choice(WORDS) for _ in range(n)]
    if words:
        words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice([".", "!", "?", "", "...", ";"])


def mixed(rng):
    pools = [WORDS, CONTRACTIONS, ACCENTED, CJK, OTHER_SCRIPTS, EMOJI, COMBINING, WHITESPACE,
             SPECIAL_TOKENS, RARE]
    parts = []
    for _ in range(rng.randint(2, 12)):
        kind = rng.randrange(len(pools) + 2)
        if kind == len(pools):
            parts.append(random_number(rng))
        elif kind == len(pools) + 1:
            parts.append(random_code_points(rng))
        else:
            parts.append(rng.choice(pools[kind]))
        parts.append(rng.choice(["", " ", " ", "  ", "\n", "\t", ", "]))
    return "".join(parts)


def generate(count=3200, seed=20240611):
    rng = random.Random(seed)
    corpus = ["", " ", "\n", "  ", "a", "Hello world", " Hello", "Hello  world", "hello\n\nworld"]
    for group in (WORDS[:20], CONTRACTIONS, ACCENTED, CJK, OTHER_SCRIPTS, EMOJI, COMBINING,
                  WHITESPACE, SPECIAL_TOKENS, CODE, RARE):
        corpus.extend(group)
    corpus.extend(unicodedata.normalize("NFD", s) for s in ACCENTED)
    corpus.extend(f"{t}Hello {t} world{t}" for t in SPECIAL_TOKENS)
    corpus.extend(f" {t} " for t in SPECIAL_TOKENS)
    corpus.append(" ".join(SPECIAL_TOKENS))
    generators = [
        lambda: prose(rng, rng.randint(1, 60)),
        lambda: prose(rng, rng.randint(1, 8)).upper(),
        lambda: " ".join(rng.choice(CONTRACTIONS + WORDS) for _ in range(rng.randint(1, 10))),
        lambda: " ".join(rng.choice(ACCENTED) for _ in range(rng.randint(1, 6))),
        lambda: unicodedata.normalize("NFD", " ".join(rng.choice(ACCENTED) for _ in range(3))),
        lambda: "".join(rng.choice(CJK) for _ in range(rng.randint(1, 4))),
        lambda: " ".join(rng.choice(OTHER_SCRIPTS) for _ in range(rng.randint(1, 4))),
        lambda: "".join(rng.choice(EMOJI + [" ", "a"]) for _ in range(rng.randint(1, 10))),
        lambda: "".join(rng.choice(COMBINING + ["a", " "]) for _ in range(rng.randint(1, 8))),
        lambda: "".join(rng.choice(WHITESPACE + ["x", "word"]) for _ in range(rng.randint(1, 12))),
        lambda: rng.choice(CODE) + rng.choice(CODE),
        lambda: " ".join(random_number(rng) for _ in range(rng.randint(1, 5))),
        lambda: prose(rng, 5) + rng.choice(SPECIAL_TOKENS) + prose(rng, 5),
        lambda: "".join(rng.choice(RARE + ["a", " "]) for _ in range(rng.randint(1, 6))),
        lambda: random_code_points(rng),
        lambda: mixed(rng),
        lambda: mixed(rng),
        lambda: mixed(rng),
    ]
    while len(corpus) < count:
        corpus.append(generators[len(corpus) % len(generators)]())
    return corpus


def bench_documents(total_bytes=1 << 20, seed=99):
    """Mixed documents for the encode benchmark: mostly English prose, plus code, other
    languages and emoji/number-heavy text, until `total_bytes` of UTF-8."""
    rng = random.Random(seed)
    makers = [
        *[lambda: "\n\n".join(prose(rng, rng.randint(40, 120)) for _ in range(3))] * 6,
        lambda: "\n".join(rng.choice(CODE) for _ in range(8)),
        lambda: "".join(rng.choice(CJK) for _ in range(30)),
        lambda: " ".join(rng.choice(OTHER_SCRIPTS + ACCENTED) for _ in range(40)),
        lambda: " ".join(mixed(rng) for _ in range(10)),
    ]
    documents, size = [], 0
    while size < total_bytes:
        doc = rng.choice(makers)()
        documents.append(doc)
        size += len(doc.encode())
    return documents


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3200)
    parser.add_argument("--bench-text", action="store_true",
                        help="print the ~1 MB benchmark documents instead of the corpus")
    args = parser.parse_args()
    for text in bench_documents() if args.bench_text else generate(args.count):
        print(json.dumps(text))


if __name__ == "__main__":
    main()
