"""Seeded synthetic LAION-5B sources for the demo, the tests and the benchmarks.

`generate` writes the published metadata families (base, joined, aesthetic and
improved_aesthetics_4.5plus) of the three subsets, and optionally an img2dataset 1.47 output
folder, with the quirks the pipeline has to survive planted on purpose: duplicate SAMPLE_IDs, a
few duplicate hashes, swapped WIDTH/HEIGHT in base, type drift between part files, nulls,
non-ASCII captions, source hashes that disagree with the recomputed one and partial coverage
between families. The exact number of each planted quirk comes back in the summary so tests can
assert it. The same arguments give byte-identical files.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import numbers
import shutil
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from etl.engine.hashing import laion_hashes

EN, MULTI, NOLANG = SUBSETS = ("laion2B-en", "laion2B-multi", "laion1B-nolang")
IMPROVED_AESTHETICS = "improved_aesthetics_4.5plus"
IMAGE_FORMATS = ("files", "webdataset", "parquet")
IMAGE_TYPES = ("jpeg", "png", "webp", "gif")
IMPROVED_AESTHETICS_MIN_SCORE = 4.5

# img2dataset's defaults (1.47) except the shard size, kept small so a demo download has shards.
IMAGES_PER_SHARD = 100
OOM_SHARD_COUNT = 5
IMAGE_SUCCESS_PERCENT = 85
GIF_COLORS = 16
DOWNLOAD_ERRORS = (
    "HTTP Error 404: Not Found",
    "HTTP Error 403: Forbidden",
    "<urlopen error [Errno -2] Name or service not known>",
    "The read operation timed out",
    "Use of image disallowed by X-Robots-Tag directive",
)
# webdataset's TarWriter defaults, with the clock replaced by a constant so tars are reproducible.
TAR_OWNER = "bigdata"
TAR_MODE = 0o444
FIXED_MTIME = 1_700_000_000

LICENSES = ("?", "creativecommons.org/licenses/by/4.0/", "creativecommons.org/licenses/by-sa/4.0/")
LICENSE_WEIGHTS = (0.95, 0.03, 0.02)
NSFW_LABELS = ("UNLIKELY", "UNSURE", "NSFW")
NSFW_WEIGHTS = (0.90, 0.07, 0.03)

# Disjoint SAMPLE_ID ranges per subset, so the only duplicate ids are the planted ones.
SAMPLE_ID_OFFSETS = {EN: 0, MULTI: 2_400_000_000, NOLANG: 4_800_000_000}
SIMILARITY_FLOOR = {EN: 0.28, MULTI: 0.26, NOLANG: 0.26}

URL_DOMAINS = (
    "i.pinimg.com", "cdn.shopify.com", "img.alicdn.com", "i.ebayimg.com", "static.wixstatic.com",
    "m.media-amazon.com", "upload.wikimedia.org", "images.squarespace-cdn.com", "www.bilder-shop.de",
    "img.over-blog-kiwi.com", "i.ytimg.com", "cdn.myshoptet.com",
)
URL_FOLDERS = (
    "images", "media", "uploads/2019/05", "photos", "product", "wp-content/uploads/2020/11",
    "i", "thumbs/800x600", "files/large",
)
URL_EXTENSIONS = ("jpg", "jpg", "jpg", "jpeg", "png", "webp", "JPG", "gif")
# Any odd multiplier is a bijection modulo 2**40, so synthetic URL ids never collide.
URL_ID_MULTIPLIER = 0x9E3779B97F4A7C15
URL_ID_BITS = 40
RESIZED_URL_SHARE = 0.1
NULL_PROBABILITY_SHARE = 0.02  # punsafe, pwatermark
NULL_LANGUAGE_SHARE = 0.03  # LANGUAGE in laion2B-en-joined

EN_WORDS = (
    ("Vintage", "Modern", "Red", "Blue", "Handmade", "Wooden", "Cute", "Large", "Elegant", "Rustic",
     "Minimalist", "Abstract", "Golden", "Black and White", "Watercolor", "Luxury", "Retro"),
    ("Leather Bag", "Coffee Table", "Wedding Dress", "Mountain Landscape", "Cat", "Dog Portrait",
     "Kitchen", "Living Room", "Sneakers", "Poster", "T-Shirt", "Necklace", "Sunset",
     "Beach House", "Bicycle", "Guitar", "Birthday Cake", "Garden", "Sports Car", "Logo Design"),
    ("for Women", "for Men", "with Flowers", "- Stock Photo", "Wall Art Print", "| Free Shipping",
     "on White Background", "in the City", "Illustration", "Photo by John Smith", "Size M",
     "2019", "Ideas", "Vector Image", "Close-up"),
)
EMOJI = ("😍", "🔥", "✨", "❤️", "🎉", "🌸", "👗", "🐶")
EMOJI_PERCENT = 2
NOLANG_WORDS = (
    ("IMG", "DSC", "Photo", "P", "image", "❤️", "👍", "#", "№", "SKU", "¡Oferta!", "Ω"),
    ("", "✨", "...", "(2)", "copy", "★★★", "🙂", "– final"),
)

MULTI_LANGUAGES = ("de", "fr", "es", "ja", "zh", "ru", "it")
MULTI_LANGUAGE_WEIGHTS = (0.20, 0.17, 0.17, 0.12, 0.12, 0.14, 0.08)
# Three slots per caption, five words per slot and language (equal sizes keep picking vectorised).
FOREIGN_WORDS = {
    "de": (("Schöne", "Große", "Günstige", "Weiße", "Alte"),
           ("Küche", "Straße", "Brücke", "Tür", "Blumenstrauß"),
           ("für Kinder", "mit Glück", "im Frühling", "aus Holz", "kaufen – günstig")),
    "fr": (("Belle", "Petite", "Élégante", "Grande", "Vieille"),
           ("maison", "église", "forêt", "fenêtre", "robe de mariée"),
           ("à vendre", "près de la mer", "en été", "déco intérieure", "pas chère")),
    "es": (("Bonita", "Pequeña", "Antigua", "Nueva", "Gran"),
           ("montaña", "niño", "cumpleaños", "señora", "playa"),
           ("en España", "para el año", "diseño", "de mañana", "con corazón")),
    "ja": (("美しい", "新しい", "かわいい", "古い", "大きな"),
           ("東京の夜景", "猫", "桜の花", "ラーメン", "着物"),
           ("の写真", "イラスト", "通販", "素材", "壁紙")),
    "zh": (("美丽的", "新款", "可爱的", "传统", "高清"),
           ("风景", "小猫", "手机壳", "连衣裙", "茶杯"),
           ("图片", "壁纸", "包邮", "设计", "高清大图")),
    "ru": (("Красивый", "Новый", "Старый", "Большой", "Зимний"),
           ("дом", "город", "кот", "лес", "платье"),
           ("в Москве", "фото", "купить", "на природе", "обои")),
    "it": (("Bella", "Nuova", "Antica", "Piccola", "Città"),
           ("cucina", "spiaggia", "chiesa", "più bella", "perché"),
           ("in vendita", "d'estate", "di Roma", "fatto a mano", "così")),
}
# With real pairs, half of the multi captions are still foreign so the subset stays multilingual.
REAL_PAIRS_FOREIGN_SHARE = 0.5


class _BasePartTypes(NamedTuple):
    sample_id: pa.DataType
    size: pa.DataType
    similarity: pa.DataType


class _JoinedPartTypes(NamedTuple):
    size: pa.DataType
    similarity: pa.DataType
    probability: pa.DataType


# Part i uses entry i % len(...): the drift seen between copies of the published files.
BASE_PART_TYPES = (
    _BasePartTypes(pa.int64(), pa.int32(), pa.float64()),
    _BasePartTypes(pa.float64(), pa.float64(), pa.float64()),
    _BasePartTypes(pa.int64(), pa.int64(), pa.float32()),
)
JOINED_PART_TYPES = (
    _JoinedPartTypes(pa.float64(), pa.float64(), pa.float32()),
    _JoinedPartTypes(pa.int64(), pa.float32(), pa.float64()),
)
AESTHETIC_TYPES = _JoinedPartTypes(pa.int64(), pa.float64(), pa.float32())
INDEX_COLUMN_SUBSET = EN
NULL_PWATERMARK_SUBSET = MULTI

IMAGE_INDEX_SCHEMA = pa.schema([
    # img2dataset puts the input columns first: save_additional_columns, then caption, then url.
    ("hash", pa.int64()),
    ("caption", pa.string()),
    ("url", pa.string()),
    ("key", pa.string()),
    ("status", pa.string()),
    ("error_message", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("original_width", pa.int32()),
    ("original_height", pa.int32()),
    ("exif", pa.string()),
    ("sha256", pa.string()),
])


@dataclass(frozen=True)
class _SubsetPlan:
    """How many rows of each kind one subset gets; samples [0, duplicated) are written twice."""

    name: str
    base_rows: int
    duplicated: int

    @property
    def distinct_base(self) -> int:
        return self.base_rows - self.duplicated

    @property
    def dropped(self) -> int:
        return min(self.distinct_base // 100, self.distinct_base - self.duplicated)

    @property
    def null_text(self) -> int:
        return self.samples // 100

    @property
    def joined_only(self) -> int:
        return self.base_rows // 200

    @property
    def samples(self) -> int:
        return self.distinct_base + self.joined_only

    @property
    def joined_rows(self) -> int:
        return self.samples - self.dropped + self.duplicated


@dataclass(frozen=True)
class _Samples:
    """One subset's distinct samples; every column is aligned on the sample number."""

    url: pa.Array
    text: pa.Array
    hash: np.ndarray
    width: np.ndarray
    height: np.ndarray
    similarity: np.ndarray
    license: pa.Array
    nsfw: pa.Array
    punsafe: pa.Array
    pwatermark: pa.Array
    language: pa.Array | None
    joined_language: pa.Array | None
    aesthetic: np.ndarray
    improved_aesthetic: np.ndarray


@dataclass(frozen=True)
class _PairPool:
    """Real URL/TEXT pairs, dealt in a seeded order and made distinct again on every lap."""

    url: pa.Array
    text: pa.Array
    order: np.ndarray

    def take(self, sample_numbers: np.ndarray) -> tuple[pa.Array, pa.Array]:
        picks = self.order[sample_numbers % len(self.order)]
        laps = sample_numbers // len(self.order)
        url = self.url.take(picks)
        text = self.text.take(picks)
        if laps.size and laps.max() > 0:
            separator = pc.if_else(pc.match_substring(url, "?"), "&s=", "?s=")
            lapped = pc.binary_join_element_wise(url, separator, pa.array(laps).cast(pa.string()), "")
            url = pc.if_else(pa.array(laps > 0), lapped, url)
        return url, text


def tree_names() -> set[str]:
    """The top-level names `generate` may write under `out`."""
    families = {f"{subset}{suffix}" for subset in SUBSETS for suffix in ("", "-joined", "-aesthetic")}
    return families | {IMPROVED_AESTHETICS, "images"}


def clear_synthetic_tree(out: Path) -> None:
    """Remove an earlier synthetic tree from `out`; refuse if `out` holds anything else."""
    out = Path(out)
    if not out.exists():
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in tree_names())
    if foreign:
        raise ValueError(f"{out} holds {foreign[0]!r}, which synth did not write; not removing it")
    for child in out.iterdir():
        shutil.rmtree(child)


def generate(out: Path, rows: int, seed: int = 0, real_pairs: Path | None = None,
             images: str | None = None, parts: int = 3) -> dict:
    """Write a LAION-like source tree under `out`; return a summary dict of counts per family/subset."""
    out = Path(out)
    _validate(out, rows, seed, images, parts)
    rows, seed, parts = int(rows), int(seed), int(parts)
    subset_rng, pairs_rng, images_rng = _streams(seed)
    pool = _load_pairs(Path(real_pairs), pairs_rng) if real_pairs is not None else None
    out.mkdir(parents=True, exist_ok=True)

    plans = _plan(rows)
    summary: dict = {"rows": rows, "seed": seed, "parts": parts}
    planted = dict.fromkeys(
        ("duplicate_sample_ids", "duplicate_hashes", "mismatched_source_hashes", "null_text",
         "dropped_from_joined", "joined_only"), 0)
    planted["index_column_part"] = f"{INDEX_COLUMN_SUBSET}/{_part_name(parts - 1)}"
    planted["null_pwatermark_part"] = (
        f"{NULL_PWATERMARK_SUBSET}-joined/{_part_name(parts - 1)}" if parts >= 3 else None)
    image_candidates = []
    improved_rows = 0
    first_sample = 0
    for plan, rng in zip(plans, subset_rng):
        samples = _make_samples(plan, first_sample, rng, pool)
        first_sample += plan.samples
        counts, subset_planted, in_joined = _write_subset(out, plan, samples, rows, parts, rng)
        summary[plan.name] = counts
        for name, count in subset_planted.items():
            planted[name] += count
        if plan.name == EN:
            improved_rows = _write_improved_aesthetics(out, samples, parts, rng)
        if plan.name in (EN, MULTI):
            image_candidates.append((plan.name, samples, in_joined))
    summary[IMPROVED_AESTHETICS] = improved_rows
    summary["planted"] = planted
    summary["images"] = (
        _write_images(out / "images", image_candidates, images, images_rng) if images else None)
    return summary


def _validate(out: Path, rows: int, seed: int, images: str | None, parts: int) -> None:
    for name, value, minimum in (("rows", rows, 1), ("parts", parts, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if images is not None and images not in IMAGE_FORMATS:
        raise ValueError(f"images must be one of {', '.join(IMAGE_FORMATS)}, got {images!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        # Stale part files from an earlier run would be picked up by the source globs.
        raise ValueError(f"out must be a new or empty directory: {out}")


def _streams(seed: int) -> tuple[list[np.random.Generator], np.random.Generator, np.random.Generator]:
    """Independent random streams, so asking for images does not change the metadata files."""
    children = np.random.SeedSequence(seed).spawn(len(SUBSETS) + 2)
    generators = [np.random.default_rng(child) for child in children]
    return generators[: len(SUBSETS)], generators[-2], generators[-1]


def _load_pairs(path: Path, rng: np.random.Generator) -> _PairPool:
    if not path.is_file():
        raise ValueError(f"real_pairs file not found: {path}")
    try:
        columns = pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError) as error:
        raise ValueError(f"real_pairs is not a readable parquet file: {path} ({error})") from error
    missing = [column for column in ("URL", "TEXT") if column not in columns]
    if missing:
        raise ValueError(f"real_pairs {path} lacks column(s) {', '.join(missing)}")
    table = pq.read_table(path, columns=["URL", "TEXT"])
    # One pair per URL keeps every sample's hash distinct, even after its TEXT is nulled.
    first_of_url = {}
    for position, url in enumerate(table.column("URL").to_pylist()):
        if url:
            first_of_url.setdefault(url, position)
    if not first_of_url:
        raise ValueError(f"real_pairs {path} has no non-empty URL")
    kept = table.take(pa.array(list(first_of_url.values())))
    return _PairPool(
        url=kept.column("URL").combine_chunks().cast(pa.string()),
        text=kept.column("TEXT").combine_chunks().cast(pa.string()),
        order=rng.permutation(kept.num_rows),
    )


def _plan(rows: int) -> list[_SubsetPlan]:
    shares = {EN: rows * 45 // 100, MULTI: rows * 45 // 100}
    shares[NOLANG] = rows - shares[EN] - shares[MULTI]
    # A duplicated sample needs two base rows; deal the duplicates round robin while they fit.
    capacity = {name: shares[name] // 2 for name in SUBSETS}
    wanted = min(max(2, rows // 2000), sum(capacity.values()))
    duplicated = dict.fromkeys(SUBSETS, 0)
    subsets = itertools.cycle(SUBSETS)
    while wanted:
        name = next(subsets)
        if duplicated[name] < capacity[name]:
            duplicated[name] += 1
            wanted -= 1
    return [_SubsetPlan(name, shares[name], duplicated[name]) for name in SUBSETS]


def _make_samples(plan: _SubsetPlan, first_sample: int, rng: np.random.Generator,
                  pool: _PairPool | None) -> _Samples:
    subset, count = plan.name, plan.samples
    sample_numbers = np.arange(first_sample, first_sample + count, dtype=np.int64)
    language_codes = rng.choice(len(MULTI_LANGUAGES), size=count, p=MULTI_LANGUAGE_WEIGHTS)
    if pool is None:
        url = _synthetic_urls(sample_numbers, rng)
        text = _synthetic_captions(subset, count, language_codes, rng)
    else:
        url, text = pool.take(sample_numbers)
        if subset == MULTI:
            foreign = pa.array(rng.random(count) < REAL_PAIRS_FOREIGN_SHARE)
            text = pc.if_else(foreign, _foreign_captions(language_codes, rng), text)
    if subset == EN:
        with_emoji = pa.array(rng.random(count) < EMOJI_PERCENT / 100)
        text = pc.if_else(with_emoji, pc.binary_join_element_wise(text, _pick(EMOJI, count, rng), " "), text)
    text = pc.if_else(pa.array(_exact_mask(count, plan.null_text, rng)), pa.scalar(None, pa.string()), text)

    width = np.clip(np.rint(np.exp(rng.normal(6.2, 0.6, count))), 32, 6000).astype(np.int64)
    height = np.clip(np.rint(width * np.exp(rng.normal(0.0, 0.3, count))), 32, 6000).astype(np.int64)
    similarity = np.minimum(SIMILARITY_FLOOR[subset] + np.abs(rng.normal(0.0, 0.045, count)), 0.5)
    nsfw_codes = rng.choice(len(NSFW_LABELS), size=count, p=NSFW_WEIGHTS)
    low_risk = rng.beta(0.5, 10.0, count)
    punsafe = np.select([nsfw_codes == 2, nsfw_codes == 1], [1.0 - low_risk, np.minimum(0.3 + low_risk, 1.0)],
                        low_risk)
    aesthetic = np.clip(rng.normal(5.0, 1.0, count), 1.0, 10.0)

    if subset == MULTI:
        language = pa.array(MULTI_LANGUAGES).take(language_codes)
        joined_language = language
    elif subset == EN:
        language = None
        joined_language = pc.if_else(pa.array(rng.random(count) < NULL_LANGUAGE_SHARE),
                                     pa.scalar(None, pa.string()), pa.repeat(pa.scalar("en"), count))
    else:
        language = joined_language = None

    return _Samples(
        url=url,
        text=text,
        hash=laion_hashes(url.to_pylist(), text.to_pylist()),
        width=width,
        height=height,
        similarity=similarity,
        license=pa.array(LICENSES).take(rng.choice(len(LICENSES), size=count, p=LICENSE_WEIGHTS)),
        nsfw=pa.array(NSFW_LABELS).take(nsfw_codes),
        punsafe=pa.array(punsafe, mask=rng.random(count) < NULL_PROBABILITY_SHARE),
        pwatermark=pa.array(rng.beta(0.7, 4.0, count), mask=rng.random(count) < NULL_PROBABILITY_SHARE),
        language=language,
        joined_language=joined_language,
        aesthetic=aesthetic,
        improved_aesthetic=_rescored(aesthetic, rng),
    )


def _rescored(aesthetic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The improved predictor's score: close to the first one but never equal, within [1, 10]."""
    shift = np.minimum(0.02 + np.abs(rng.normal(0.0, 0.1, aesthetic.size)), 0.5)
    shift *= rng.choice((-1.0, 1.0), size=aesthetic.size)
    moved = aesthetic + shift
    return np.where((moved < 1.0) | (moved > 10.0), aesthetic - shift, moved)


def _exact_mask(count: int, chosen: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(count, dtype=bool)
    mask[rng.permutation(count)[:chosen]] = True
    return mask


def _pick(words: tuple[str, ...], count: int, rng: np.random.Generator) -> pa.Array:
    return pa.array(words).take(rng.integers(0, len(words), count))


def _synthetic_urls(sample_numbers: np.ndarray, rng: np.random.Generator) -> pa.Array:
    count = sample_numbers.size
    salt = np.uint64(rng.integers(0, 2**32))
    ids = ((sample_numbers.astype(np.uint64) + salt) * np.uint64(URL_ID_MULTIPLIER)) & np.uint64(
        2**URL_ID_BITS - 1)
    url = pc.binary_join_element_wise(
        "https://", _pick(URL_DOMAINS, count, rng), "/", _pick(URL_FOLDERS, count, rng), "/",
        pa.array(ids).cast(pa.string()), ".", _pick(URL_EXTENSIONS, count, rng), "")
    resized = pa.array(rng.random(count) < RESIZED_URL_SHARE)
    return pc.if_else(resized, pc.binary_join_element_wise(url, "?w=800&q=80", ""), url)


def _synthetic_captions(subset: str, count: int, language_codes: np.ndarray,
                        rng: np.random.Generator) -> pa.Array:
    if subset == EN:
        return pc.binary_join_element_wise(*(_pick(slot, count, rng) for slot in EN_WORDS), " ")
    if subset == MULTI:
        return _foreign_captions(language_codes, rng)
    prefixes, suffixes = NOLANG_WORDS
    numbers = pa.array(rng.integers(1, 10_000, count)).cast(pa.string())
    caption = pc.binary_join_element_wise(_pick(prefixes, count, rng), numbers, _pick(suffixes, count, rng), " ")
    return pc.utf8_trim_whitespace(caption)


def _foreign_captions(language_codes: np.ndarray, rng: np.random.Generator) -> pa.Array:
    slots = []
    for slot in range(3):
        words = [word for language in MULTI_LANGUAGES for word in FOREIGN_WORDS[language][slot]]
        per_language = len(words) // len(MULTI_LANGUAGES)
        picks = language_codes * per_language + rng.integers(0, per_language, language_codes.size)
        slots.append(pa.array(words).take(picks))
    return pc.binary_join_element_wise(*slots, " ")


def _write_subset(out: Path, plan: _SubsetPlan, samples: _Samples, rows: int, parts: int,
                  rng: np.random.Generator) -> tuple[dict, dict, np.ndarray]:
    """Write one subset's base, joined and aesthetic files; return counts, planted counts and
    the sample numbers present in joined."""
    duplicated = np.arange(plan.duplicated)

    base_samples = np.concatenate([np.arange(plan.distinct_base), duplicated])
    sample_ids = SAMPLE_ID_OFFSETS[plan.name] + rng.permutation(plan.base_rows).astype(np.int64) * 3
    sample_ids += rng.integers(0, 3, plan.base_rows)
    # Reusers and donors are distinct samples (positions below distinct_base), never a sample
    # and its own second copy, so a shared SAMPLE_ID always means a different URL/TEXT.
    reusers_count = plan.base_rows // 20
    shuffled = rng.permutation(plan.distinct_base)
    reusers, donor_pool = shuffled[:reusers_count], shuffled[reusers_count:]
    if reusers_count:
        sample_ids[reusers] = sample_ids[donor_pool[rng.integers(0, donor_pool.size, reusers_count)]]
    base_order = rng.permutation(plan.base_rows)
    _write_base(out / plan.name, samples, base_samples[base_order], sample_ids[base_order], parts,
                with_index_column=plan.name == INDEX_COLUMN_SUBSET)

    droppable = np.arange(plan.duplicated, plan.distinct_base)
    dropped = rng.permutation(droppable)[: plan.dropped]
    in_joined = np.setdiff1d(np.arange(plan.samples), dropped)
    joined_samples = rng.permutation(np.concatenate([in_joined, duplicated]))
    mismatched_count = plan.joined_rows // 500
    if plan.name == EN and rows >= 100:
        mismatched_count = max(mismatched_count, 1)
    source_hash = samples.hash[joined_samples]
    # Only rows of samples written once, so the duplicate-hash count is the same on either hash.
    single_rows = np.flatnonzero(joined_samples >= plan.duplicated)
    mismatched = rng.permutation(single_rows)[:mismatched_count]
    source_hash[mismatched] = _stale_hashes(samples, joined_samples[mismatched])
    _write_joined(out / f"{plan.name}-joined", samples, joined_samples, source_hash, parts,
                  null_pwatermark_last_part=plan.name == NULL_PWATERMARK_SUBSET and parts >= 3)

    aesthetic_samples = rng.permutation(plan.samples)[: plan.samples * 3 // 10]
    _write_aesthetic(out / f"{plan.name}-aesthetic", samples, aesthetic_samples, parts,
                     score_column="aesthetic", scores=samples.aesthetic, score_type=pa.float32())

    counts = {"base": plan.base_rows, "joined": plan.joined_rows, "aesthetic": aesthetic_samples.size}
    planted = {
        "duplicate_sample_ids": reusers_count,
        "duplicate_hashes": plan.duplicated,
        "mismatched_source_hashes": mismatched.size,
        "null_text": plan.null_text,
        "dropped_from_joined": plan.dropped,
        "joined_only": plan.joined_only,
    }
    return counts, planted, in_joined


def _stale_hashes(samples: _Samples, sample_numbers: np.ndarray) -> np.ndarray:
    """Hashes of a caption that was trimmed after hashing: a different string, a different hash."""
    urls = samples.url.take(sample_numbers).to_pylist()
    texts = [(text or "") + " " for text in samples.text.take(sample_numbers).to_pylist()]
    return laion_hashes(urls, texts)


def _part_name(part: int) -> str:
    return f"part-{part:05d}.parquet"


def _write_parquet(table: pa.Table, path: Path) -> None:
    # Every option pinned: the bytes must not depend on library defaults changing.
    pq.write_table(table, path, compression="snappy", version="2.6", data_page_version="1.0",
                   use_dictionary=True, write_statistics=True)


def _write_parts(directory: Path, rows: int, parts: int, build_part) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for part, positions in enumerate(np.array_split(np.arange(rows), parts)):
        _write_parquet(build_part(part, positions), directory / _part_name(part))


def _measurements(samples: _Samples, picked: np.ndarray, types: _JoinedPartTypes) -> dict[str, pa.Array]:
    """URL .. pwatermark as the joined and aesthetic families publish them (true WIDTH/HEIGHT)."""
    return {
        "URL": samples.url.take(picked),
        "TEXT": samples.text.take(picked),
        "WIDTH": pa.array(samples.width[picked]).cast(types.size),
        "HEIGHT": pa.array(samples.height[picked]).cast(types.size),
        "similarity": pa.array(samples.similarity[picked]).cast(types.similarity),
        "hash": pa.array(samples.hash[picked]),
        "punsafe": samples.punsafe.take(picked).cast(types.probability),
        "pwatermark": samples.pwatermark.take(picked).cast(types.probability),
    }


def _write_base(directory: Path, samples: _Samples, row_samples: np.ndarray, sample_ids: np.ndarray,
                parts: int, with_index_column: bool) -> None:
    def build_part(part: int, positions: np.ndarray) -> pa.Table:
        types = BASE_PART_TYPES[part % len(BASE_PART_TYPES)]
        picked = row_samples[positions]
        columns = {
            "SAMPLE_ID": pa.array(sample_ids[positions]).cast(types.sample_id),
            "URL": samples.url.take(picked),
            "TEXT": samples.text.take(picked),
            # Published swapped: HEIGHT holds the true width and WIDTH the true height.
            "HEIGHT": pa.array(samples.width[picked]).cast(types.size),
            "WIDTH": pa.array(samples.height[picked]).cast(types.size),
            "LICENSE": samples.license.take(picked),
        }
        if samples.language is not None:
            columns["LANGUAGE"] = samples.language.take(picked)
        columns["NSFW"] = samples.nsfw.take(picked)
        columns["similarity"] = pa.array(samples.similarity[picked]).cast(types.similarity)
        if with_index_column and part == parts - 1:
            columns["__index_level_0__"] = pa.array(np.arange(picked.size, dtype=np.int64))
        return pa.table(columns)

    _write_parts(directory, row_samples.size, parts, build_part)


def _write_joined(directory: Path, samples: _Samples, row_samples: np.ndarray, source_hash: np.ndarray,
                  parts: int, null_pwatermark_last_part: bool) -> None:
    def build_part(part: int, positions: np.ndarray) -> pa.Table:
        picked = row_samples[positions]
        columns = _measurements(samples, picked, JOINED_PART_TYPES[part % len(JOINED_PART_TYPES)])
        columns["hash"] = pa.array(source_hash[positions])
        if null_pwatermark_last_part and part == parts - 1:
            columns["pwatermark"] = pa.nulls(picked.size)
        if samples.joined_language is not None:
            columns["LANGUAGE"] = samples.joined_language.take(picked)
        return pa.table(columns)

    _write_parts(directory, row_samples.size, parts, build_part)


def _write_aesthetic(directory: Path, samples: _Samples, row_samples: np.ndarray, parts: int,
                     score_column: str, scores: np.ndarray, score_type: pa.DataType) -> None:
    def build_part(part: int, positions: np.ndarray) -> pa.Table:
        picked = row_samples[positions]
        columns = _measurements(samples, picked, AESTHETIC_TYPES)
        columns[score_column] = pa.array(scores[picked]).cast(score_type)
        return pa.table(columns)

    _write_parts(directory, row_samples.size, parts, build_part)


def _write_improved_aesthetics(out: Path, en_samples: _Samples, parts: int, rng: np.random.Generator) -> int:
    kept = np.flatnonzero(en_samples.improved_aesthetic >= IMPROVED_AESTHETICS_MIN_SCORE)
    _write_aesthetic(out / IMPROVED_AESTHETICS, en_samples, rng.permutation(kept), parts,
                     score_column="AESTHETIC_SCORE", scores=en_samples.improved_aesthetic,
                     score_type=pa.float64())
    return kept.size


def _image_key(index: int, shard: int) -> str:
    """img2dataset's compute_key: shard id and index in shard, zero-padded to their orders of magnitude."""
    oom_sample_per_shard = math.ceil(math.log10(IMAGES_PER_SHARD))
    return f"{10**oom_sample_per_shard * shard + index:0{oom_sample_per_shard + OOM_SHARD_COUNT}d}"


def _encode_image(image_type: str, rng: np.random.Generator) -> bytes:
    height, width = rng.integers(8, 33, 2)
    if image_type == "gif":
        # A ready palette image: letting Pillow quantise RGB noise for GIF is 20x slower.
        image = Image.fromarray(rng.integers(0, GIF_COLORS, (height, width), dtype=np.uint8), "P")
        image.putpalette(rng.integers(0, 256, 3 * GIF_COLORS, dtype=np.uint8).tobytes())
    else:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=image_type.upper())
    return buffer.getvalue()


def _write_images(folder: Path, candidates: list[tuple[str, _Samples, np.ndarray]], output_format: str,
                  rng: np.random.Generator) -> dict:
    """An img2dataset 1.47 output folder as `--disable_all_reencoding True --save_additional_columns
    '["hash"]'` leaves it: real bytes under `{key}.jpg`, width/height columns null."""
    urls, captions, hashes, per_subset = [], [], [], {}
    for subset, samples, in_joined in candidates:
        share = in_joined.size // 5 if subset == EN else min(in_joined.size, max(1, in_joined.size // 50))
        chosen = np.sort(rng.permutation(in_joined)[:share])
        urls.append(samples.url.take(chosen))
        captions.append(samples.text.take(chosen))
        hashes.append(samples.hash[chosen])
        per_subset[subset] = share
    order = rng.permutation(sum(per_subset.values()))
    urls = pa.concat_arrays(urls).take(order).to_pylist()
    captions = pa.concat_arrays(captions).take(order).to_pylist()
    hashes = np.concatenate(hashes)[order].tolist()
    failed = _exact_mask(len(urls), len(urls) * (100 - IMAGE_SUCCESS_PERCENT) // 100, rng)

    folder.mkdir(parents=True, exist_ok=True)
    image_types = dict.fromkeys(IMAGE_TYPES, 0)
    successes = 0
    for shard, start in enumerate(range(0, len(urls), IMAGES_PER_SHARD)):
        records, images = [], []
        for index, row in enumerate(range(start, min(start + IMAGES_PER_SHARD, len(urls)))):
            record = {"hash": hashes[row], "caption": captions[row], "url": urls[row],
                      "key": _image_key(index, shard), "status": "success", "error_message": None,
                      "width": None, "height": None, "original_width": None, "original_height": None,
                      "exif": None, "sha256": None}
            if failed[row]:
                record["status"] = "failed_to_download"
                record["error_message"] = DOWNLOAD_ERRORS[rng.integers(len(DOWNLOAD_ERRORS))]
                images.append(None)
            else:
                image_type = IMAGE_TYPES[successes % len(IMAGE_TYPES)]
                image = _encode_image(image_type, rng)
                image_types[image_type] += 1
                successes += 1
                # exifread finds no tags in Pillow's output; img2dataset stores that as "{}".
                record["exif"] = "{}"
                record["sha256"] = hashlib.sha256(image).hexdigest()
                images.append(image)
            records.append(record)
        _write_image_shard(folder, shard, records, images, output_format)

    return {
        "format": output_format,
        "rows": len(urls),
        "success": successes,
        "failed": len(urls) - successes,
        "shards": math.ceil(len(urls) / IMAGES_PER_SHARD),
        "subsets": per_subset,
        "image_types": image_types,
    }


def _write_image_shard(folder: Path, shard: int, records: list[dict], images: list[bytes | None],
                       output_format: str) -> None:
    shard_name = f"{shard:0{OOM_SHARD_COUNT}d}"
    schema = IMAGE_INDEX_SCHEMA
    columns = {name: [record[name] for record in records] for name in schema.names}
    if output_format == "parquet":
        schema = schema.append(pa.field("jpg", pa.binary()))
        columns["jpg"] = images
    _write_parquet(pa.Table.from_pydict(columns, schema), folder / f"{shard_name}.parquet")

    members = [
        (record["key"], image, record)
        for record, image in zip(records, images) if image is not None
    ]
    if output_format == "files":
        subfolder = folder / shard_name
        subfolder.mkdir()
        for key, image, record in members:
            (subfolder / f"{key}.jpg").write_bytes(image)
            (subfolder / f"{key}.txt").write_bytes(_caption_bytes(record))
            (subfolder / f"{key}.json").write_bytes(_meta_bytes(record))
    elif output_format == "webdataset":
        with tarfile.open(folder / f"{shard_name}.tar", "w") as tar:
            for key, image, record in members:
                # webdataset's TarWriter writes a sample's members sorted by extension.
                for extension, payload in (("jpg", image), ("json", _meta_bytes(record)),
                                           ("txt", _caption_bytes(record))):
                    _add_tar_member(tar, f"{key}.{extension}", payload)

    _write_stats(folder, shard_name, shard, records)


def _caption_bytes(record: dict) -> bytes:
    return ("" if record["caption"] is None else str(record["caption"])).encode("utf-8")


def _meta_bytes(record: dict) -> bytes:
    return json.dumps(record, indent=4).encode("utf-8")


def _add_tar_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = FIXED_MTIME
    info.mode = TAR_MODE
    info.uname = info.gname = TAR_OWNER
    tar.addfile(info, io.BytesIO(payload))


def _write_stats(folder: Path, shard_name: str, shard: int, records: list[dict]) -> None:
    status_counts = Counter(record["error_message"] or record["status"] for record in records)
    start_time = float(FIXED_MTIME + 60 * shard)
    end_time = start_time + 0.05 * len(records)
    stats = {
        "count": len(records),
        "successes": status_counts["success"],
        "failed_to_download": len(records) - status_counts["success"],
        "failed_to_resize": 0,
        "duration": end_time - start_time,
        "start_time": start_time,
        "end_time": end_time,
        "status_dict": dict(status_counts),
    }
    (folder / f"{shard_name}_stats.json").write_text(json.dumps(stats, indent=4), encoding="utf-8")
