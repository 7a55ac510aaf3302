//! Character classes shared with pyarrow's string kernels (tables generated from pyarrow).

#[rustfmt::skip]
#[allow(clippy::all)]
mod tables {
    include!("unicode_tables.rs");
}

fn in_ranges(table: &[(u32, u32)], c: u32) -> bool {
    table
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Whitespace as `utf8_split_whitespace`, `utf8_trim_whitespace` and Python's `str.split()` see it.
#[inline]
pub fn is_space(c: char) -> bool {
    let c = c as u32;
    if c < 0x80 {
        return (0x9..=0xD).contains(&c) || (0x1C..=0x20).contains(&c);
    }
    in_ranges(tables::WHITESPACE, c)
}

/// RE2's `[\pL\pN]`: letters and numbers of any script.
#[inline]
pub fn is_letter_or_number(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric();
    }
    in_ranges(tables::LETTER_OR_NUMBER, c as u32)
}

/// RE2's `\pL`: letters of any script (a word "has a letter" for the Gopher filters).
#[inline]
pub fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    in_ranges(tables::LETTER, c as u32)
}

/// The audit's noise class: control, replacement and private-use characters.
#[inline]
pub fn is_noise(c: char) -> bool {
    let c = c as u32;
    if c < 0x80 {
        return c <= 0x8 || c == 0xB || c == 0xC || (0xE..=0x1F).contains(&c) || c == 0x7F;
    }
    in_ranges(tables::NOISE, c)
}

/// RE2's `\s`, which is ASCII only: tab, newline, form feed, carriage return, space.
#[inline]
pub fn is_re2_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0C' | '\r' | ' ')
}

/// Line boundaries as Python's `str.splitlines()` sees them (`\r\n` is handled by the caller).
#[inline]
pub fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\x0B'
            | '\x0C'
            | '\x1C'
            | '\x1D'
            | '\x1E'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_fast_paths_agree_with_tables() {
        for b in 0u8..0x80 {
            let c = b as char;
            assert_eq!(
                is_space(c),
                in_ranges(tables::WHITESPACE, b as u32),
                "{b:#x}"
            );
            assert_eq!(
                is_letter_or_number(c),
                in_ranges(tables::LETTER_OR_NUMBER, b as u32),
                "{b:#x}"
            );
            assert_eq!(is_noise(c), in_ranges(tables::NOISE, b as u32), "{b:#x}");
        }
    }

    #[test]
    fn classes_outside_ascii() {
        assert!(is_space('\u{3000}') && is_space('\u{85}') && !is_space('\u{200B}'));
        assert!(is_letter_or_number('é') && is_letter_or_number('٣') && !is_letter_or_number('€'));
        assert!(is_noise('\u{FFFD}') && is_noise('\u{E000}') && !is_noise('a'));
    }
}
