//! Per-row text statistics for the audit heuristics, computed in one pass over each row.
//!
//! Definitions follow Python's `str` methods (whitespace, `splitlines`, `lower`) and the
//! RE2 classes the audit counts with pyarrow, so each field equals its slow reference.

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

use crate::text::TextColumn;
use crate::unicode::{is_letter_or_number, is_line_break, is_noise, is_re2_space, is_space};

/// Column names of the statistics matrix, in order.
pub const FIELDS: [&str; 16] = [
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
];

/// Reusable per-thread scratch space.
#[derive(Default)]
pub struct Scratch {
    word_hashes: Vec<u64>,
    trigrams: Vec<(u64, u64, u64)>,
    lines: Vec<(usize, usize)>,
    lower: String,
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
    } = scratch;
    word_hashes.clear();
    trigrams.clear();
    lines.clear();
    let (mut chars, mut word_chars, mut letters, mut noise, mut re2_spaces) =
        (0i64, 0i64, 0i64, 0i64, 0i64);
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
        if is_space(c) {
            if let Some((start, before)) = word_start.take() {
                word_chars += chars - 1 - before;
                word_hashes.push(lower_hash(&text[start..i], lower));
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

    // Repeated lines: characters of every stripped line beyond its first occurrence.
    let mut stripped: Vec<&str> = lines
        .iter()
        .map(|&(s, e)| text[s..e].trim_matches(is_space))
        .filter(|l| !l.is_empty())
        .collect();
    let nonempty_lines = stripped.len() as i64;
    let line_chars: i64 = stripped.iter().map(|l| l.chars().count() as i64).sum();
    stripped.sort_unstable();
    let mut repeated_line_chars = 0i64;
    for pair in stripped.windows(2) {
        if pair[0] == pair[1] {
            repeated_line_chars += pair[1].chars().count() as i64;
        }
    }

    trigrams.extend(word_hashes.windows(3).map(|w| (w[0], w[1], w[2])));
    let word_trigrams = trigrams.len() as i64;
    trigrams.sort_unstable();
    trigrams.dedup();

    out.copy_from_slice(&[
        text.len() as i64,
        chars,
        stripped_chars,
        word_hashes.len() as i64,
        word_chars,
        lines.len() as i64,
        nonempty_lines,
        line_chars,
        repeated_line_chars,
        max_line_chars,
        word_trigrams,
        trigrams.len() as i64,
        longest_run,
        letters,
        noise,
        re2_spaces,
    ]);
}

/// Statistics of every row into `out` (rows x `FIELDS.len()`, row-major), in parallel.
pub fn text_stats(texts: &TextColumn<'_>, out: &mut [i64]) {
    let width = FIELDS.len();
    assert_eq!(out.len(), texts.len() * width);
    out.par_chunks_mut(width)
        .enumerate()
        .with_min_len(64)
        .for_each_init(Scratch::default, |scratch, (i, row)| {
            row_stats(&texts.text(i), scratch, row);
            // Bytes as stored: a binary row's invalid UTF-8 is counted before replacement.
            row[0] = texts.bytes(i).len() as i64;
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
