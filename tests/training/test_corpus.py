"""Corpus preparation: GCIDE and fortune cleaning, caching, PATH and hf sources, the held-out split."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trusttrace.core.files import text_sha256
from trusttrace.training import corpus as corpus_mod
from trusttrace.training.corpus import MARKER, Corpus, prepare_corpus, read_data_folder, split_heldout
from trusttrace.training.corpus_builtin import clean_gcide_entry, fortune_documents

# The real file's format (trimmed from gcide.dict.dz): a dictd header, then entries that start unindented
# with a backslash-syllabified headword, a phonetic parenthesis, etymology brackets and source tags.
GCIDE_SAMPLE = r"""

00-database-url
   ftp://ftp.gnu.org/gnu/gcide

00-database-info
   This file was converted from the original database on:
             Tue Feb 15 10:31:36 2022

The original data was distributed with the notice shown below.

      A dictionary containing a natural history requires too
      many hands.                                 --Locke.
Abandon \A*ban"don\ ([.a]*b[a^]n"d[u^]n), v. t. [imp. & p. p.
   {Abandoned} (-d[u^]nd); p. pr. & vb. n. {Abandoning}.] [OF.
   abandoner, F. abandonner. See {Ban}.]
   1. To cast or drive out; to banish; to expel; to reject.
      [Obs.]
      [1913 Webster]

            That he might . . . abandon them from him. --Udall.
      [1913 Webster]

   Syn: To give up; yield; forego.

   Usage: {To Abandon}, {Desert}. These words agree in
          representing a person as giving up some object.
          [1913 Webster]

Abanga \A*ban"ga\ ([.a]*b[a^][ng]"g[.a]), n. [Name given by the
   negroes in the island of St. Thomas.]
   A West Indian palm.
   [1913 Webster] Abannation

Abannation \Ab`an*na"tion\ ([a^]b`[a^]n*n[=a]"sh[u^]n),
Abannition \Ab`an*nition\ ([a^]b`[a^]n*n[i^]sh"[u^]n), n. [LL.
   abannatio.] (Old Law)
   Banishment. [Obs.] --Bailey.
   [1913 Webster]

Apple \Ap"ple\ ([a^]p"p'l), n. [OE. appel, AS. [ae]ppel.]
   The fleshy pome of a rosaceous tree ({Pyrus malus}); cf. the
   {Apples of Sodom} ({Solanum Sodom[ae]um}). See {Co["o]p"er*ate}.
   -- {Ap"ple*like`}, a.
   [Webster 1913 Suppl.]

applesauce \applesauce\ n.
   1. puree of stewed apples.

   Syn: apple sauce
        [WordNet 1.5]
"""

GCIDE_CLEAN = [
    ("Abandon, v. t. 1. To cast or drive out; to banish; to expel; to reject. That he might . . . abandon them "
     "from him. --Udall. Synonyms: To give up; yield; forego. To Abandon, Desert. These words agree in "
     "representing a person as giving up some object."),
    "Abanga, n. A West Indian palm.",
    "Abannation, Abannition, n. (Old Law) Banishment. --Bailey.",
    ("Apple, n. The fleshy pome of a rosaceous tree (Pyrus malus); cf. the Apples of Sodom (Solanum Sodomæum). "
     "See Coöperate. -- Applelike, a."),
    "applesauce n. 1. puree of stewed apples. Synonyms: apple sauce",
]

FORTUNE_SAMPLE = (
    'A "critic" is a man who creates nothing and thereby feels qualified to\n'
    "judge the work of creative men.\n"
    "\t\t-- Robert Heinlein\n"
    "%\n"
    "    ***\n"
    "  *******\n"
    ' ****** Confucious say: "Is stuffy."\n'
    "  *******\n"
    "    ***\n"
    "%\n"
    "_\bI_\bm_\bp_\bo_\br_\bt_\ba_\bn_\bt: read the manual.\n"
    "%\n"
    "Hi.\n"
    "%\n"
)

FORTUNE_CLEAN = [
    ('A "critic" is a man who creates nothing and thereby feels qualified to judge the work of creative men. '
     "-- Robert Heinlein"),
    "Important: read the manual.",
    "A celebrity is a person who is known for his well-knownness.",
]


@pytest.fixture
def packages(tmp_path: Path) -> dict[str, Path]:
    """A GCIDE dictzip and a fortune folder laid out like the Debian packages (with .dat, .u8 and off/)."""
    gcide = tmp_path / "dictd" / "gcide.dict.dz"
    gcide.parent.mkdir()
    with gzip.open(gcide, "wt", encoding="utf-8") as f:
        f.write(GCIDE_SAMPLE)
    fortunes = tmp_path / "fortunes"
    fortunes.mkdir()
    (fortunes / "fortunes").write_text(FORTUNE_SAMPLE, encoding="utf-8")
    (fortunes / "fortunes.dat").write_bytes(b"\x00\x00\x00\x02 binary index text text text text")
    (fortunes / "fortunes.u8").symlink_to("fortunes")
    # A duplicate fortune in a second file is dropped; the celebrity one is new.
    (fortunes / "people").write_text(
        "Important: read the manual.\n%\nA celebrity is a person who is known for his well-knownness.\n%\n",
        encoding="utf-8")
    (fortunes / "off").mkdir()
    (fortunes / "off" / "fortunes").write_text("Offensive text that is not read at all.\n%\n", encoding="utf-8")
    return {"gcide_path": gcide, "fortune_dir": fortunes}


def _all_docs(corpus: Corpus) -> list[str]:
    return corpus.documents("train") + corpus.documents("heldout")


# ==== cleaning ===================================================================================


def test_gcide_markup_is_stripped_exactly(packages):
    assert corpus_mod.gcide_documents(packages["gcide_path"]) == GCIDE_CLEAN


def test_gcide_entry_cleaning_keeps_braced_words_and_converts_letter_codes():
    entry = 'Dog \\Dog\\ (d[add]g or d[o^]g), n. [AS. docga.]\n   A {hot dog}. [slang]\n   [PJC]'
    assert clean_gcide_entry(entry) == "Dog, n. A hot dog."
    assert clean_gcide_entry("Na\\Na\\, a. A {na[\"i]ve} [thorn] and [sect] 4.\n   [1913 Webster]") == (
        "Na, a. A naïve þ and § 4.")


def test_fortunes_are_split_joined_and_ascii_art_dropped():
    cleaned = [" ".join(doc.split()) for doc in fortune_documents(FORTUNE_SAMPLE)]
    assert cleaned == [FORTUNE_CLEAN[0], FORTUNE_CLEAN[1], "Hi."]  # "Hi." goes later, as too short


def test_builtin_corpus_has_both_sources_cleaned_and_deduplicated(packages, tmp_path):
    corpus = prepare_corpus("builtin", cache=tmp_path / "c", **packages)
    assert sorted(_all_docs(corpus)) == sorted(GCIDE_CLEAN + FORTUNE_CLEAN)
    assert corpus.n_documents == len(GCIDE_CLEAN) + len(FORTUNE_CLEAN)
    assert corpus.source == "builtin"
    assert corpus.train.parent.parent == tmp_path / "c" / "corpus"
    assert corpus.train.parent.name.startswith("builtin-")
    train_text = corpus.train.read_text(encoding="utf-8")
    heldout_text = corpus.heldout.read_text(encoding="utf-8")
    assert "\n\n" not in train_text and "\t" not in train_text and train_text.endswith("\n")
    assert corpus.n_chars == len(train_text) + len(heldout_text)
    assert corpus.sha256 == text_sha256(train_text + heldout_text)
    assert json.loads(json.dumps(corpus.to_dict()))["n_heldout"] == corpus.n_heldout


def test_default_cache_is_trusttrace_cache(packages, tmp_path):
    corpus = prepare_corpus("builtin", **packages)
    assert corpus.train.is_relative_to(Path(os.environ["TRUSTTRACE_CACHE"]))


# ==== caching ====================================================================================


def test_second_call_reuses_the_cache_without_parsing(packages, tmp_path, monkeypatch):
    first = prepare_corpus("builtin", cache=tmp_path, **packages)

    def fail(*args, **kwargs):
        raise AssertionError("the cached corpus was parsed again")

    monkeypatch.setattr(corpus_mod, "gcide_documents", fail)
    monkeypatch.setattr(corpus_mod, "fortune_documents", fail)
    assert prepare_corpus("builtin", cache=tmp_path, **packages) == first


def test_an_interrupted_build_without_marker_is_rebuilt(packages, tmp_path):
    first = prepare_corpus("builtin", cache=tmp_path, **packages)
    (first.train.parent / MARKER).unlink()
    first.train.write_text("half a docu", encoding="utf-8")
    again = prepare_corpus("builtin", cache=tmp_path, **packages)
    assert again == first
    assert again.documents() == first.documents() and "half a docu" not in again.documents()
    assert (first.train.parent / MARKER).is_file()


def test_changed_inputs_or_split_get_their_own_cache(packages, tmp_path):
    first = prepare_corpus("builtin", cache=tmp_path, **packages)
    other_seed = prepare_corpus("builtin", cache=tmp_path, seed=1, **packages)
    assert other_seed.train.parent != first.train.parent
    with (packages["fortune_dir"] / "people").open("a", encoding="utf-8") as f:
        f.write("A new fortune, long enough to be kept.\n%\n")
    grown = prepare_corpus("builtin", cache=tmp_path, **packages)
    assert grown.train.parent != first.train.parent
    assert grown.n_documents == first.n_documents + 1


# ==== missing packages and bad specs =============================================================


@pytest.mark.parametrize("missing", ["gcide_path", "fortune_dir"])
def test_missing_packages_say_what_to_install(packages, tmp_path, missing):
    paths = {**packages, missing: tmp_path / "absent"}
    with pytest.raises(FileNotFoundError) as err:
        prepare_corpus("builtin", cache=tmp_path, **paths)
    message = str(err.value)
    for needed in ("dict-gcide", "fortunes", "sudo apt-get install dict-gcide fortunes", "--corpus PATH"):
        assert needed in message
    assert f"missing: {'dict-gcide' if missing == 'gcide_path' else 'fortunes'} (" in message


@pytest.mark.parametrize("spec", ["", "Builtin", "built-in", "s3:bucket/key", "hf:", "hf:a:b:c", "hf:bad name"])
def test_bad_spec_names_the_value_and_the_forms(tmp_path, spec):
    with pytest.raises(ValueError) as err:
        prepare_corpus(spec, cache=tmp_path)
    assert repr(spec) in str(err.value)
    assert "'builtin'" in str(err.value) and "PATH" in str(err.value) and "hf:NAME" in str(err.value)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_bad_heldout_fraction(packages, tmp_path, fraction):
    with pytest.raises(ValueError, match="heldout_fraction"):
        prepare_corpus("builtin", cache=tmp_path, heldout_fraction=fraction, **packages)


def test_bad_split_name(packages, tmp_path):
    with pytest.raises(ValueError, match="'train' or 'heldout'"):
        prepare_corpus("builtin", cache=tmp_path, **packages).documents("test")  # type: ignore[arg-type]


# ==== PATH =======================================================================================


def test_path_file_splits_paragraphs_at_blank_lines(tmp_path):
    text = ("\ufeffThe first paragraph is\nwrapped over   two lines.\n\n  \n"
            "The second\tparagraph follows.\n\nshort\n\nThe first paragraph is wrapped over two lines.\n")
    path = tmp_path / "my corpus.txt"
    path.write_text(text, encoding="utf-8")
    corpus = prepare_corpus(str(path), cache=tmp_path / "c", heldout_fraction=0.0)
    assert sorted(corpus.documents()) == ["The first paragraph is wrapped over two lines.",
                                          "The second paragraph follows."]
    assert corpus.documents("heldout") == [] and corpus.n_heldout == 0
    assert corpus.source == str(path) and corpus.train.parent.name.startswith("path-my_corpus.txt-")


def test_path_folder_reads_its_txt_files(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "b.txt").write_text("Second file, first paragraph.\n", encoding="utf-8")
    (folder / "a.txt").write_text("First file, first paragraph.\n\nFirst file, second one.\n", encoding="utf-8")
    (folder / "notes.md").write_text("Markdown is not read by the corpus.\n", encoding="utf-8")
    corpus = prepare_corpus(str(folder), cache=tmp_path / "c", heldout_fraction=0.0)
    assert sorted(corpus.documents()) == ["First file, first paragraph.", "First file, second one.",
                                          "Second file, first paragraph."]


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.txt does not exist.*'builtin'"):
        prepare_corpus(str(tmp_path / "nowhere.txt"), cache=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.txt file"):
        prepare_corpus(str(tmp_path / "empty"), cache=tmp_path)


def test_path_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("Caf\xe9 au lait is a coffee drink.".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        prepare_corpus(str(path), cache=tmp_path)


def test_path_without_any_long_document(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("a\n\nb\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no document"):
        prepare_corpus(str(path), cache=tmp_path)


# ==== hf:NAME ====================================================================================


def test_hf_offline_is_a_clear_error(tmp_path):
    with pytest.raises((ConnectionError, ValueError), match="someone/no-such-corpus"):
        prepare_corpus("hf:someone/no-such-corpus", cache=tmp_path)


def test_read_data_folder_reads_parquet_jsonl_and_txt(tmp_path):
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"text": ["Parquet row one.", None], "id": [1, 2]}),
                   tmp_path / "data" / "train-00000.parquet")
    rows = [{"text": "Jsonl row one.", "id": 3}, {"text": "Jsonl row two.", "id": 4}]
    (tmp_path / "data" / "validation.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n",
                                                         encoding="utf-8")
    (tmp_path / "extra.txt").write_text("A text paragraph.\n\nAnother one.\n", encoding="utf-8")
    (tmp_path / "README.md").write_text("not data", encoding="utf-8")
    assert read_data_folder(tmp_path) == ["Parquet row one.", "Jsonl row one.", "Jsonl row two.",
                                          "A text paragraph.", "Another one."]
    with pytest.raises(ValueError, match="no column 'story'.*hf:NAME:COLUMN"):
        read_data_folder(tmp_path, "story")


def test_read_data_folder_without_data(tmp_path):
    with pytest.raises(ValueError, match="no parquet, jsonl or txt"):
        read_data_folder(tmp_path)


def test_hf_spec_reads_the_downloaded_folder(tmp_path, monkeypatch):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "train.jsonl").write_text(json.dumps({"story": "Once upon a time there was a corpus."}) + "\n",
                                          encoding="utf-8")
    monkeypatch.setattr(corpus_mod, "_download_hf", lambda name: snapshot)
    corpus = prepare_corpus("hf:someone/stories:story", cache=tmp_path / "c", heldout_fraction=0.0)
    assert corpus.documents() == ["Once upon a time there was a corpus."]
    assert corpus.train.parent.name.startswith("hf-someone_stories-story-")


# ==== held-out split =============================================================================


def test_heldout_split_is_deterministic_disjoint_and_shuffled():
    docs = [f"Document number {i} of the synthetic corpus." for i in range(2000)]
    train, heldout = split_heldout(docs, 0.1, seed=0)
    assert (train, heldout) == split_heldout(docs, 0.1, seed=0)
    assert not set(train) & set(heldout) and sorted(train + heldout) == sorted(docs)
    assert 150 < len(heldout) < 250
    assert split_heldout(docs, 0.1, seed=1)[1] != heldout
    # Shuffled, so a prefix samples the whole corpus (documents 0-99 are not the first hundred)...
    assert train[:100] != [d for d in docs if d in set(train)][:100]
    assert max(int(d.split()[2]) for d in train[:100]) > 1000
    # ...and fixed by the texts alone: reversing the input changes neither side nor its order.
    assert split_heldout(docs[::-1], 0.1, seed=0) == (train, heldout)


def test_heldout_split_keeps_one_document_on_each_side():
    docs = ["First document here.", "Second document here."]
    train, heldout = split_heldout(docs, 0.001, seed=0)
    assert len(train) == len(heldout) == 1
    train, heldout = split_heldout(docs, 0.999, seed=0)
    assert len(train) == len(heldout) == 1
    train, heldout = split_heldout(docs, 0.0, seed=0)
    assert sorted(train) == docs and heldout == []


def test_builtin_heldout_is_deterministic_for_a_seed(packages, tmp_path):
    a = prepare_corpus("builtin", cache=tmp_path / "a", heldout_fraction=0.3, seed=3, **packages)
    b = prepare_corpus("builtin", cache=tmp_path / "b", heldout_fraction=0.3, seed=3, **packages)
    assert a.documents("heldout") == b.documents("heldout") and a.sha256 == b.sha256
    assert a.n_heldout >= 1 and not set(a.documents("heldout")) & set(a.documents("train"))


# ==== the real packages ==========================================================================


@pytest.mark.slow  # `make setup` installs dict-gcide and fortunes; a machine without them fails here, by design
def test_real_builtin_corpus(tmp_path):
    corpus = prepare_corpus("builtin", cache=tmp_path)
    docs = set(_all_docs(corpus))
    assert corpus.n_chars > 20_000_000 and corpus.n_documents > 100_000
    assert "Abannation, Abannition, n. (Old Law) Banishment. --Bailey." in docs
    assert not any(doc.startswith("00-database") for doc in docs)
