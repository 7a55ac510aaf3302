//! Which rows a set of regular expressions can match, in one parallel pass.
//!
//! The patterns are compiled with `(?-u)`: `\d`, `\w`, `\s` and `\b` are ASCII only, as
//! in RE2, and the haystack is the row's bytes. For patterns built from ASCII atoms
//! (the audit's PII and blob patterns) a match is an ASCII substring, so the answer
//! equals RE2's on UTF-8 text; the audit still confirms candidate rows with pyarrow.

use rayon::prelude::*;
use regex::bytes::RegexSet;

use crate::text::TextColumn;

/// The patterns as one set; an invalid pattern is reported with its index.
pub fn compile(patterns: &[String]) -> Result<RegexSet, String> {
    for (i, p) in patterns.iter().enumerate() {
        regex::bytes::Regex::new(&format!("(?-u:{p})"))
            .map_err(|e| format!("pattern {i} does not compile: {e}"))?;
    }
    RegexSet::new(patterns.iter().map(|p| format!("(?-u:{p})")))
        .map_err(|e| format!("the patterns do not compile together: {e}"))
}

/// `out[row * k + j]` = pattern j matches somewhere in the row (k = number of patterns).
pub fn matches(texts: &TextColumn<'_>, set: &RegexSet, out: &mut [bool]) {
    let k = set.len();
    assert_eq!(out.len(), texts.len() * k);
    if k == 0 {
        return;
    }
    out.par_chunks_mut(k)
        .enumerate()
        .with_min_len(256)
        .for_each(|(i, row)| {
            let bytes = texts.bytes(i);
            if bytes.is_empty() {
                row.fill(false);
                return;
            }
            let found = set.matches(bytes);
            for (j, slot) in row.iter_mut().enumerate() {
                *slot = found.matched(j);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::OwnedColumn;

    #[test]
    fn each_row_reports_the_patterns_it_matches() {
        let set = compile(&[r"\b\d{3}-\d{2}\b".into(), "@".into()]).unwrap();
        let col = OwnedColumn::from_rows(&["id 123-45 at x@y", "", "é123-45", "x1234-56"]);
        let mut out = vec![true; 8];
        matches(&col.view(), &set, &mut out);
        assert_eq!(out, [true, true, false, false, true, false, false, false]);
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(compile(&["(".into()]).is_err());
    }
}
