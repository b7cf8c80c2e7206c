"""Public-domain demo corpora from Debian packages, as (question, answer) chat pairs.

Each corpus reads one installed Debian package and turns it into short single-turn chats whose
answers carry the corpus's style; tools/train_demo_adapters.py trains one adapter per corpus.
Every corpus records the package, version and file it came from (PROVENANCE.md).
"""
import gzip
import random
import re
import subprocess

QUESTIONS = ["What is {}?", "Tell me about {}.", "Define {}.", "What does \"{}\" mean?"]

# Words too common to make a question about; the KJV keyword is the longest remaining word.
STOPWORDS = set("""
shall unto their there which against before because hundred thousand therefore themselves
behold neither whosoever according wherefore whereas between without brought children saying
father things people another through answered called turned together upon them they said
""".split())


def package_version(name: str) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise SystemExit(f"demo corpus: Debian package {name} is not installed "
                         f"(apt-get install {name})")
    return out.stdout


def _one_paragraph(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def kjv(rng: random.Random):
    """King James Bible: two consecutive verses, asked about by their longest content word."""
    out = subprocess.run(["bible", "Gen1:1-Rev22:21"], capture_output=True, text=True,
                         check=True).stdout
    verses, current = [], None
    for line in out.splitlines():
        m = re.match(r"^\s+(\d+) (.*)$", line)
        if m:
            current = [m.group(2)]
            verses.append(current)
        elif line.strip() and current is not None and not re.match(r"^\S.* \d+$", line):
            current.append(line.strip())
        else:
            current = None
    verses = [_one_paragraph(" ".join(v)) for v in verses]
    pairs = []
    for i in range(0, len(verses) - 1, 2):
        answer = verses[i] + " " + verses[i + 1]
        words = [w.lower() for w in re.findall(r"[A-Za-z]+", answer)
                 if w.islower() and len(w) >= 5 and w.lower() not in STOPWORDS]
        if not words:
            continue
        keyword = max(words, key=lambda w: (len(w), w))
        pairs.append((rng.choice(QUESTIONS).format(keyword), answer))
    return pairs


def jargon(rng: random.Random):
    """The Jargon File: an entry's first paragraph, asked about by its headword."""
    with gzip.open("/usr/share/doc/jargon-text/jargon.txt.gz", "rt", encoding="utf-8") as f:
        text = f.read()
    pairs = []
    # Entries look like "   :term: /pron/, n.\n\n   First paragraph...\n\n".
    for m in re.finditer(r"^   :([^:\n]+):[^\n]*\n\n((?:   \S[^\n]*\n)+)", text, re.M):
        term, body = m.group(1).strip(), m.group(2)
        # Drop a leading sense number, part of speech or [usage tag]: the prose is the style.
        answer = _one_paragraph(re.sub(r"^((\d+|n|v|vi|vt|adj|adv|interj)\.\s*|\[[^\]]*\]\s*)+",
                                       "", body.strip()))
        answer = answer.replace("{", "").replace("}", "")
        if len(answer) >= 40:
            pairs.append((rng.choice(QUESTIONS).format(term), answer))
    return pairs


def devil(rng: random.Random):
    """The Devil's Dictionary: an entry's prose definition, asked about by its headword."""
    with gzip.open("/usr/share/dictd/devil.dict.dz", "rb") as f:
        data = f.read()
    pairs = []
    with open("/usr/share/dictd/devil.index", encoding="utf-8") as f:
        for line in f:
            head, offset, length = line.rstrip("\n").split("\t")
            if head.startswith("00database"):
                continue
            start, size = _b64_number(offset), _b64_number(length)
            entry = data[start:start + size].decode("utf-8", "replace")
            first = entry.strip().split("\n\n")[0]
            m = re.match(r"^[A-Z][A-Z' .-]*, *[a-z. ]+\.\s+(.*)$", first, re.S)
            if not m:
                continue
            answer = _one_paragraph(m.group(1)).replace("{", "").replace("}", "")
            if len(answer) >= 20:
                pairs.append((rng.choice(QUESTIONS).format(head.lower()), answer))
    return pairs


def _b64_number(text: str) -> int:
    """dictd index numbers: base64 digits, most significant first."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    value = 0
    for c in text:
        value = value * 64 + alphabet.index(c)
    return value


# name -> (reader, Debian package, version package, source file, licence line)
CORPORA = {
    "kjv": (kjv, "bible-kjv-text", "bible-kjv-text", "/usr/lib/bible.data (read with the "
            "`bible` program from the bible-kjv package)",
            "King James Version (1611): copyright expired; see "
            "/usr/share/doc/bible-kjv-text/copyright"),
    "jargon": (jargon, "jargon-text", "jargon-text", "/usr/share/doc/jargon-text/jargon.txt.gz",
               "The Jargon File 4.4.7 is in the public domain; see "
               "/usr/share/doc/jargon-text/copyright"),
    "devil": (devil, "dict-devil", "dict-devil", "/usr/share/dictd/devil.dict.dz + devil.index",
              "The Devil's Dictionary (Ambrose Bierce, 1911) is in the public domain; see "
              "/usr/share/doc/dict-devil/copyright"),
}
