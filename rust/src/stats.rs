//! Per-row text statistics for the audit heuristics, computed in one pass over each row.
//!
//! Definitions follow Python's `str` methods (whitespace, `splitlines`, `lower`) and the
//! RE2 classes the audit counts with pyarrow, so each field equals its slow reference.

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

use crate::text::TextColumn;
use crate::unicode::{
    is_letter, is_letter_or_number, is_line_break, is_noise, is_re2_space, is_space,
};

/// Column names of the statistics matrix, in order.
pub const FIELDS: [&str; 21] = [
    "bytes",
    "chars",
    "stripped_chars",
    "words",
    "word_chars",
    "lines",
    "nonempty_lines",
    "line_chars",
    "repeated_line_chars",
    "max_line_chars",
    "word_trigrams",
    "unique_word_trigrams",
    "longest_char_run",
    "letter_or_number_chars",
    "noise_chars",
    "re2_space_chars",
    "alpha_words",
    "stop_words",
    "symbol_tokens",
    "bullet_lines",
    "ellipsis_lines",
];

/// The Gopher filters' stop words (a word is one when, stripped of the letters-or-numbers
/// it does not start and end with, it equals one of these ignoring ASCII case).
pub const STOP_WORDS: [&str; 8] = ["the", "be", "to", "of", "and", "that", "have", "with"];

/// What the Gopher filters count of one word: (has a letter, is a stop word).
fn word_class(word: &str) -> (bool, bool) {
    let has_letter = word.chars().any(is_letter);
    let core = word.trim_matches(|c: char| !is_letter_or_number(c));
    let stop = core.is_ascii() && STOP_WORDS.iter().any(|w| core.eq_ignore_ascii_case(w));
    (has_letter, stop)
}

/// `word_class` for an ASCII word.
fn ascii_word_class(word: &[u8]) -> (bool, bool) {
    let has_letter = word.iter().any(u8::is_ascii_alphabetic);
    let start = word.iter().position(u8::is_ascii_alphanumeric);
    let stop = start.is_some_and(|s| {
        let end = word
            .iter()
            .rposition(u8::is_ascii_alphanumeric)
            .unwrap_or(s)
            + 1;
        STOP_WORDS
            .iter()
            .any(|w| word[s..end].eq_ignore_ascii_case(w.as_bytes()))
    });
    (has_letter, stop)
}

/// Symbol tokens of the Gopher symbol-to-word ratio: each `#`, each `…`, and each
/// `...` (a run of dots counts one per three, left to right).
#[derive(Default)]
struct Symbols {
    count: i64,
    dots: i64,
}

impl Symbols {
    #[inline]
    fn push(&mut self, c: char) {
        if c == '.' {
            self.dots += 1;
            return;
        }
        self.count += self.dots / 3 + (c == '#' || c == '\u{2026}') as i64;
        self.dots = 0;
    }

    fn total(&self) -> i64 {
        self.count + self.dots / 3
    }
}

/// A stripped, non-empty line that starts with a bullet: one of `•‣◦⁃∙▪·`, or `-`, `*`
/// or `+` followed by whitespace.
fn is_bullet_line(line: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(line) else {
        return false;
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(
            '\u{2022}' | '\u{2023}' | '\u{25E6}' | '\u{2043}' | '\u{2219}' | '\u{25AA}' | '\u{B7}',
        ) => true,
        Some('-' | '*' | '+') => chars.next().is_some_and(is_space),
        _ => false,
    }
}

/// A stripped, non-empty line that ends with `...` or `…`.
fn is_ellipsis_line(line: &[u8]) -> bool {
    line.ends_with(b"...") || line.ends_with("\u{2026}".as_bytes())
}

/// Reusable per-thread scratch space.
#[derive(Default)]
pub struct Scratch {
    word_hashes: Vec<u64>,
    trigrams: Vec<(u64, u64, u64)>,
    lines: Vec<(usize, usize)>,
    lower: String,
    lower_bytes: Vec<u8>,
    slots: Vec<u32>,
}

fn lower_hash(word: &str, lower: &mut String) -> u64 {
    if word.is_ascii() {
        lower.clear();
        lower.extend(word.bytes().map(|b| b.to_ascii_lowercase() as char));
        xxh3_64(lower.as_bytes())
    } else {
        xxh3_64(word.to_lowercase().as_bytes())
    }
}

/// The statistics of one text into `out` (one entry per `FIELDS` name).
pub fn row_stats(text: &str, scratch: &mut Scratch, out: &mut [i64]) {
    let Scratch {
        word_hashes,
        trigrams,
        lines,
        lower,
        slots,
        ..
    } = scratch;
    word_hashes.clear();
    trigrams.clear();
    lines.clear();
    let (mut chars, mut word_chars, mut letters, mut noise, mut re2_spaces) =
        (0i64, 0i64, 0i64, 0i64, 0i64);
    let (mut alpha_words, mut stop_words, mut symbols) = (0i64, 0i64, Symbols::default());
    let (mut longest_run, mut run, mut prev) = (0i64, 0i64, None::<char>);
    let (mut max_line_chars, mut line_chars_now) = (0i64, 0i64);
    let mut word_start: Option<(usize, i64)> = None;
    let mut line_start = 0usize;
    let mut after_cr = false;
    for (i, c) in text.char_indices() {
        chars += 1;
        run = if prev == Some(c) { run + 1 } else { 1 };
        longest_run = longest_run.max(run);
        prev = Some(c);
        letters += is_letter_or_number(c) as i64;
        noise += is_noise(c) as i64;
        re2_spaces += is_re2_space(c) as i64;
        symbols.push(c);
        if is_space(c) {
            if let Some((start, before)) = word_start.take() {
                word_chars += chars - 1 - before;
                word_hashes.push(lower_hash(&text[start..i], lower));
                let (alpha, stop) = word_class(&text[start..i]);
                alpha_words += alpha as i64;
                stop_words += stop as i64;
            }
        } else if word_start.is_none() {
            word_start = Some((i, chars - 1));
        }
        if is_line_break(c) {
            let crlf_tail = c == '\n' && after_cr;
            if !crlf_tail {
                lines.push((line_start, i));
                max_line_chars = max_line_chars.max(line_chars_now);
            }
            line_chars_now = 0;
            line_start = i + c.len_utf8();
        } else {
            line_chars_now += 1;
        }
        after_cr = c == '\r';
    }
    if let Some((start, before)) = word_start {
        word_chars += chars - before;
        word_hashes.push(lower_hash(&text[start..], lower));
        let (alpha, stop) = word_class(&text[start..]);
        alpha_words += alpha as i64;
        stop_words += stop as i64;
    }
    if line_start < text.len() {
        lines.push((line_start, text.len()));
        max_line_chars = max_line_chars.max(line_chars_now);
    }
    let leading = text.chars().take_while(|&c| is_space(c)).count() as i64;
    let stripped_chars = if leading == chars {
        0
    } else {
        chars - leading - text.chars().rev().take_while(|&c| is_space(c)).count() as i64
    };
    let line_spans = lines.iter().map(|&(s, e)| {
        let line = text[s..e].trim_matches(is_space);
        (line.as_bytes(), line.chars().count() as i64)
    });
    let counts = Counts {
        bytes: text.len() as i64,
        chars,
        stripped_chars,
        word_chars,
        lines: lines.len() as i64,
        max_line_chars,
        longest_run,
        letters,
        noise,
        re2_spaces,
        alpha_words,
        stop_words,
        symbols: symbols.total(),
    };
    finish(counts, line_spans, word_hashes, (trigrams, slots), out);
}

/// The per-character counts of one row, gathered by either scan.
struct Counts {
    bytes: i64,
    chars: i64,
    stripped_chars: i64,
    word_chars: i64,
    lines: i64,
    max_line_chars: i64,
    longest_run: i64,
    letters: i64,
    noise: i64,
    re2_spaces: i64,
    alpha_words: i64,
    stop_words: i64,
    symbols: i64,
}

/// How many distinct word trigrams `word_hashes` holds, counted exactly (whole tuples
/// compared) in an open-addressing table: linear in the row, where sorting the
/// trigrams was the largest cost of the statistics.
fn distinct_trigrams(
    word_hashes: &[u64],
    trigrams: &mut Vec<(u64, u64, u64)>,
    slots: &mut Vec<u32>,
) -> usize {
    trigrams.clear();
    let n = word_hashes.len().saturating_sub(2);
    if n == 0 {
        return 0;
    }
    // At most half full, so probes stay short; a slot holds 1 + an index into `trigrams`.
    let mask = (2 * n).next_power_of_two() - 1;
    slots.clear();
    slots.resize(mask + 1, 0);
    for w in word_hashes.windows(3) {
        let key = (w[0], w[1], w[2]);
        let mixed = w[0] ^ w[1].rotate_left(21) ^ w[2].rotate_left(42);
        let mut at = crate::minhash::mix64(mixed) as usize & mask;
        loop {
            match slots[at] {
                0 => {
                    trigrams.push(key);
                    slots[at] = trigrams.len() as u32;
                    break;
                }
                k if trigrams[k as usize - 1] == key => break,
                _ => at = (at + 1) & mask,
            }
        }
    }
    trigrams.len()
}

/// Line repetition and word trigram statistics, then every field into `out`.
///
/// `stripped_lines` yields each line stripped of surrounding whitespace, as bytes (byte
/// order is code point order, so sorting them sorts the strings) with its characters.
fn finish<'t>(
    c: Counts,
    stripped_lines: impl Iterator<Item = (&'t [u8], i64)>,
    word_hashes: &[u64],
    (trigrams, slots): (&mut Vec<(u64, u64, u64)>, &mut Vec<u32>),
    out: &mut [i64],
) {
    // Repeated lines: characters of every stripped line beyond its first occurrence.
    let mut stripped: Vec<(&[u8], i64)> = stripped_lines.filter(|(l, _)| !l.is_empty()).collect();
    let nonempty_lines = stripped.len() as i64;
    let bullet_lines = stripped.iter().filter(|(l, _)| is_bullet_line(l)).count() as i64;
    let ellipsis_lines = stripped.iter().filter(|(l, _)| is_ellipsis_line(l)).count() as i64;
    let line_chars: i64 = stripped.iter().map(|&(_, n)| n).sum();
    stripped.sort_unstable();
    let mut repeated_line_chars = 0i64;
    for pair in stripped.windows(2) {
        if pair[0].0 == pair[1].0 {
            repeated_line_chars += pair[1].1;
        }
    }

    let word_trigrams = word_hashes.len().saturating_sub(2) as i64;
    let unique_word_trigrams = distinct_trigrams(word_hashes, trigrams, slots) as i64;

    out.copy_from_slice(&[
        c.bytes,
        c.chars,
        c.stripped_chars,
        word_hashes.len() as i64,
        c.word_chars,
        c.lines,
        nonempty_lines,
        line_chars,
        repeated_line_chars,
        c.max_line_chars,
        word_trigrams,
        unique_word_trigrams,
        c.longest_run,
        c.letters,
        c.noise,
        c.re2_spaces,
        c.alpha_words,
        c.stop_words,
        c.symbols,
        bullet_lines,
        ellipsis_lines,
    ]);
}

const SPACE: u8 = 1;
const LETTER_OR_NUMBER: u8 = 2;
const NOISE: u8 = 4;
const RE2_SPACE: u8 = 8;
const LINE_BREAK: u8 = 16;

/// The character classes of each ASCII byte, from the same predicates the general scan uses.
fn ascii_classes() -> [u8; 128] {
    let mut t = [0u8; 128];
    for (b, slot) in t.iter_mut().enumerate() {
        let c = b as u8 as char;
        *slot = (is_space(c) as u8 * SPACE)
            | (is_letter_or_number(c) as u8 * LETTER_OR_NUMBER)
            | (is_noise(c) as u8 * NOISE)
            | (is_re2_space(c) as u8 * RE2_SPACE)
            | (is_line_break(c) as u8 * LINE_BREAK);
    }
    t
}

fn ascii_lower_hash(word: &[u8], lower: &mut Vec<u8>) -> u64 {
    if !word.iter().any(u8::is_ascii_uppercase) {
        return xxh3_64(word);
    }
    lower.clear();
    lower.extend(word.iter().map(u8::to_ascii_lowercase));
    xxh3_64(lower)
}

/// `row_stats` for an ASCII row: one byte is one character, so a class table replaces
/// decoding and the range lookups.
pub fn row_stats_ascii(text: &[u8], classes: &[u8; 128], scratch: &mut Scratch, out: &mut [i64]) {
    debug_assert!(text.is_ascii());
    let Scratch {
        word_hashes,
        trigrams,
        lines,
        lower_bytes,
        slots,
        ..
    } = scratch;
    word_hashes.clear();
    trigrams.clear();
    lines.clear();
    let (mut word_chars, mut letters, mut noise, mut re2_spaces) = (0i64, 0i64, 0i64, 0i64);
    let (mut alpha_words, mut stop_words, mut symbols) = (0i64, 0i64, Symbols::default());
    let (mut longest_run, mut run, mut prev) = (0i64, 0i64, u16::MAX);
    let mut max_line_chars = 0i64;
    let mut word_start: Option<usize> = None;
    let mut line_start = 0usize;
    let mut after_cr = false;
    for (i, &b) in text.iter().enumerate() {
        let class = classes[(b & 0x7F) as usize];
        run = if prev == b as u16 { run + 1 } else { 1 };
        longest_run = longest_run.max(run);
        prev = b as u16;
        letters += (class & LETTER_OR_NUMBER != 0) as i64;
        noise += (class & NOISE != 0) as i64;
        re2_spaces += (class & RE2_SPACE != 0) as i64;
        symbols.push(b as char);
        if class & SPACE != 0 {
            if let Some(start) = word_start.take() {
                word_chars += (i - start) as i64;
                word_hashes.push(ascii_lower_hash(&text[start..i], lower_bytes));
                let (alpha, stop) = ascii_word_class(&text[start..i]);
                alpha_words += alpha as i64;
                stop_words += stop as i64;
            }
        } else if word_start.is_none() {
            word_start = Some(i);
        }
        if class & LINE_BREAK != 0 {
            if !(b == b'\n' && after_cr) {
                lines.push((line_start, i));
                max_line_chars = max_line_chars.max((i - line_start) as i64);
            }
            line_start = i + 1;
        }
        after_cr = b == b'\r';
    }
    if let Some(start) = word_start {
        word_chars += (text.len() - start) as i64;
        word_hashes.push(ascii_lower_hash(&text[start..], lower_bytes));
        let (alpha, stop) = ascii_word_class(&text[start..]);
        alpha_words += alpha as i64;
        stop_words += stop as i64;
    }
    if line_start < text.len() {
        lines.push((line_start, text.len()));
        max_line_chars = max_line_chars.max((text.len() - line_start) as i64);
    }
    let is_space_byte = |b: &u8| classes[(b & 0x7F) as usize] & SPACE != 0;
    let chars = text.len() as i64;
    let leading = text.iter().take_while(|b| is_space_byte(b)).count() as i64;
    let stripped_chars = if leading == chars {
        0
    } else {
        chars - leading - text.iter().rev().take_while(|b| is_space_byte(b)).count() as i64
    };
    let line_spans = lines.iter().map(|&(s, e)| {
        let line = &text[s..e];
        let start = line
            .iter()
            .position(|b| !is_space_byte(b))
            .unwrap_or(line.len());
        let end = line
            .iter()
            .rposition(|b| !is_space_byte(b))
            .map_or(start, |i| i + 1);
        (&line[start..end], (end - start) as i64)
    });
    let counts = Counts {
        bytes: chars,
        chars,
        stripped_chars,
        word_chars,
        lines: lines.len() as i64,
        max_line_chars,
        longest_run,
        letters,
        noise,
        re2_spaces,
        alpha_words,
        stop_words,
        symbols: symbols.total(),
    };
    finish(counts, line_spans, word_hashes, (trigrams, slots), out);
}

/// Statistics of every row into `out` (rows x `FIELDS.len()`, row-major), in parallel.
pub fn text_stats(texts: &TextColumn<'_>, out: &mut [i64]) {
    let width = FIELDS.len();
    assert_eq!(out.len(), texts.len() * width);
    let classes = ascii_classes();
    out.par_chunks_mut(width)
        .enumerate()
        .with_min_len(64)
        .for_each_init(Scratch::default, |scratch, (i, row)| {
            let bytes = texts.bytes(i);
            if bytes.is_ascii() {
                row_stats_ascii(bytes, &classes, scratch, row);
                return;
            }
            row_stats(&texts.text(i), scratch, row);
            // Bytes as stored: a binary row's invalid UTF-8 is counted before replacement.
            row[0] = bytes.len() as i64;
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(text: &str) -> Vec<i64> {
        let mut out = vec![0; FIELDS.len()];
        row_stats(text, &mut Scratch::default(), &mut out);
        out
    }

    fn field(text: &str, name: &str) -> i64 {
        stats(text)[FIELDS.iter().position(|f| *f == name).unwrap()]
    }

    #[test]
    fn the_ascii_scan_equals_the_general_one() {
        // Every ASCII byte, weighted toward the ones with meaning: spaces, line breaks
        // (CR LF included), repeated lines and words, case, controls.
        let alphabet: Vec<u8> = (0u8..0x80)
            .chain(*b"  \n\n\r\n\r aAbB..!!xxxxxxxxxxxx\t\x0b\x0c\x1c\x1f")
            .collect();
        let mut s = 0x5eed_u64;
        let (mut scratch, classes) = (Scratch::default(), ascii_classes());
        for row in 0..3000 {
            let mut text = Vec::new();
            for _ in 0..row % 97 {
                s = crate::minhash::mix64(s);
                if s.is_multiple_of(7) {
                    text.extend_from_slice(b"Same line\n");
                } else {
                    text.push(alphabet[(s >> 8) as usize % alphabet.len()]);
                }
            }
            let mut fast = vec![0; FIELDS.len()];
            row_stats_ascii(&text, &classes, &mut scratch, &mut fast);
            let text = String::from_utf8(text).unwrap();
            assert_eq!(fast, stats(&text), "{text:?}");
        }
    }

    #[test]
    fn gopher_counts() {
        assert_eq!(field("The cat, and THE dog (to) theme", "stop_words"), 4);
        assert_eq!(field("The cat, and THE dog (to) theme", "alpha_words"), 7);
        assert_eq!(field("12 3.5 $9 x1 é", "alpha_words"), 2);
        assert_eq!(
            field("# tag ... .... ...... \u{2026} .. ##", "symbol_tokens"),
            8
        );
        let list = "- one\n  * two\n+three\n\u{2022} four\n\nplain";
        assert_eq!(field(list, "bullet_lines"), 3);
        assert_eq!(
            field("wait...\nso\u{2026}  \nok.\n...", "ellipsis_lines"),
            3
        );
    }

    #[test]
    fn distinct_trigrams_counts_like_sort_and_dedup() {
        let (mut trigrams, mut slots) = (Vec::new(), Vec::new());
        let mut s = 7u64;
        for len in 0..400 {
            // Few distinct words, so many trigrams repeat (and some share a prefix).
            let words: Vec<u64> = (0..len)
                .map(|_| {
                    s = crate::minhash::mix64(s);
                    s % (1 + len as u64 / 20)
                })
                .collect();
            let mut want: Vec<_> = words.windows(3).map(|w| (w[0], w[1], w[2])).collect();
            want.sort_unstable();
            want.dedup();
            assert_eq!(
                distinct_trigrams(&words, &mut trigrams, &mut slots),
                want.len()
            );
        }
    }

    #[test]
    fn empty_text_has_all_zero_statistics() {
        assert!(stats("").iter().all(|&v| v == 0));
    }

    #[test]
    fn lines_follow_python_splitlines() {
        assert_eq!(field("a\r\nb\n", "lines"), 2);
        assert_eq!(field("\n", "lines"), 1);
        assert_eq!(field("a\n\nb", "lines"), 3);
        assert_eq!(field("a\n\nb", "nonempty_lines"), 2);
        assert_eq!(field("ab\u{2028}c", "max_line_chars"), 2);
    }

    #[test]
    fn repetition_counts_repeated_lines_and_trigrams() {
        assert_eq!(field("spam\n spam \nspam\neggs", "repeated_line_chars"), 8);
        assert_eq!(field("spam\n spam \nspam\neggs", "line_chars"), 16);
        let text = "A b c a B c a b C";
        assert_eq!(field(text, "word_trigrams"), 7);
        assert_eq!(field(text, "unique_word_trigrams"), 3);
        assert_eq!(field("xaaaay", "longest_char_run"), 4);
    }

    #[test]
    fn character_classes_and_lengths() {
        let text = "  héllo\tworld 42 \u{FFFD}\x07 ";
        assert_eq!(field(text, "chars"), 20);
        assert_eq!(field(text, "stripped_chars"), 17);
        assert_eq!(field(text, "bytes"), text.len() as i64);
        assert_eq!(field(text, "words"), 4);
        assert_eq!(field(text, "word_chars"), 14);
        assert_eq!(field(text, "letter_or_number_chars"), 12);
        assert_eq!(field(text, "noise_chars"), 2);
        assert_eq!(field(text, "re2_space_chars"), 6);
    }
}
